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
