"""Template filters of the job admin pages."""

from django import template

register = template.Library()


@register.filter
def seconds(value) -> str:
    """12.3 → "12.3 s", 0.0042 → "4 ms", 4000 → "1h 06m"; None → "—"."""
    if value is None or value == "":
        return "—"
    value = float(value)
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{int(value // 60)}m {int(value % 60):02d}s"
    return f"{int(value // 3600)}h {int(value % 3600 // 60):02d}m"


@register.filter
def per_minute(value) -> str:
    return f"{float(value):.2f}"


@register.filter
def get(mapping, key):
    return (mapping or {}).get(key)


@register.inclusion_tag("admin/date_hierarchy.html")
def cheap_date_hierarchy(cl):
    """Django's date drill-down without its SELECT DISTINCT date_trunc(...) over every matching row.

    Only MIN/MAX are read (served by the created_at index); the years, months or days offered are
    the calendar between them, so a few links may lead to an empty list.
    """
    import calendar
    import datetime as dt

    from django.db.models import Max, Min
    from django.utils import formats, timezone
    from django.utils.text import capfirst

    field = cl.date_hierarchy
    year_f, month_f, day_f = f"{field}__year", f"{field}__month", f"{field}__day"
    year, month, day = (cl.params.get(f) for f in (year_f, month_f, day_f))

    def link(filters):
        return cl.get_query_string(filters, [f"{field}__"])

    today = timezone.localdate()
    if not (year or month or day):
        bounds = cl.queryset.aggregate(first=Min(field), last=Max(field))
        if not bounds["first"]:
            return {"show": False}
        first, last = timezone.localtime(bounds["first"]), timezone.localtime(bounds["last"])
        if first.year != last.year:
            return {"show": True, "back": None, "choices": [
                {"link": link({year_f: str(y)}), "title": str(y)} for y in range(first.year, last.year + 1)]}
        year = first.year
        if first.month == last.month:
            month = first.month
    try:
        year, month, day = int(year), int(month) if month else None, int(day) if day else None
        if day:
            date = dt.date(year, month, day)
            return {"show": True,
                    "back": {"link": link({year_f: year, month_f: month}),
                             "title": capfirst(formats.date_format(date, "YEAR_MONTH_FORMAT"))},
                    "choices": [{"title": capfirst(formats.date_format(date, "MONTH_DAY_FORMAT"))}]}
        if month:
            last_day = calendar.monthrange(year, month)[1]
            days = [dt.date(year, month, d) for d in range(1, last_day + 1) if dt.date(year, month, d) <= today]
            return {"show": True, "back": {"link": link({year_f: year}), "title": str(year)},
                    "choices": [{"link": link({year_f: year, month_f: month, day_f: d.day}),
                                 "title": capfirst(formats.date_format(d, "MONTH_DAY_FORMAT"))} for d in days]}
        months = [dt.date(year, m, 1) for m in range(1, 13) if dt.date(year, m, 1) <= today]
        return {"show": True, "back": {"link": link({}), "title": "All dates"},
                "choices": [{"link": link({year_f: year, month_f: m.month}),
                             "title": capfirst(formats.date_format(m, "YEAR_MONTH_FORMAT"))} for m in months]}
    except ValueError:
        return {"show": False}
