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

    Offers only the years, months or days that have rows (queues.selectors.queryset_dates_with_rows:
    a DISTINCT over few matching rows, one EXISTS probe per candidate period over many). The
    candidates at the top level are the years between MIN and MAX (served by the created_at index).
    """
    import calendar
    import datetime as dt

    from django.db.models import Max, Min
    from django.utils import formats, timezone
    from django.utils.text import capfirst

    from queues.selectors import queryset_dates_with_rows

    field = cl.date_hierarchy
    year_f, month_f, day_f = f"{field}__year", f"{field}__month", f"{field}__day"
    year, month, day = (cl.params.get(f) for f in (year_f, month_f, day_f))

    def link(filters):
        return cl.get_query_string(filters, [f"{field}__"])

    def having_rows(starts, end, kind):
        return queryset_dates_with_rows(queryset=cl.queryset, field=field, kind=kind, starts=starts, end=end)

    if not (year or month or day):
        bounds = cl.queryset.aggregate(first=Min(field), last=Max(field))
        if not bounds["first"]:
            return {"show": False}
        first, last = timezone.localtime(bounds["first"]), timezone.localtime(bounds["last"])
        if first.year != last.year:
            years = having_rows(
                [dt.date(y, 1, 1) for y in range(first.year, last.year + 1)], dt.date(last.year + 1, 1, 1), "year"
            )
            return {
                "show": True,
                "back": None,
                "choices": [{"link": link({year_f: str(y.year)}), "title": str(y.year)} for y in years],
            }
        year = first.year
        if first.month == last.month:
            month = first.month
    try:
        year, month, day = int(year), int(month) if month else None, int(day) if day else None
        if day:
            if month is None:
                raise ValueError("a day without its month")
            date = dt.date(year, month, day)
            return {
                "show": True,
                "back": {
                    "link": link({year_f: year, month_f: month}),
                    "title": capfirst(formats.date_format(date, "YEAR_MONTH_FORMAT")),
                },
                "choices": [{"title": capfirst(formats.date_format(date, "MONTH_DAY_FORMAT"))}],
            }
        if month:
            last_day = calendar.monthrange(year, month)[1]
            days = having_rows(
                [dt.date(year, month, d) for d in range(1, last_day + 1)],
                dt.date(year, month, last_day) + dt.timedelta(days=1),
                "day",
            )
            return {
                "show": True,
                "back": {"link": link({year_f: year}), "title": str(year)},
                "choices": [
                    {
                        "link": link({year_f: year, month_f: month, day_f: d.day}),
                        "title": capfirst(formats.date_format(d, "MONTH_DAY_FORMAT")),
                    }
                    for d in days
                ],
            }
        months = having_rows([dt.date(year, m, 1) for m in range(1, 13)], dt.date(year + 1, 1, 1), "month")
        return {
            "show": True,
            "back": {"link": link({}), "title": "All dates"},
            "choices": [
                {
                    "link": link({year_f: year, month_f: m.month}),
                    "title": capfirst(formats.date_format(m, "YEAR_MONTH_FORMAT")),
                }
                for m in months
            ],
        }
    except (ValueError, OverflowError):
        return {"show": False}
