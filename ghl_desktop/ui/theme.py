"""The window's colours, derived from the palette — the only place colours are decided.

Everything else asks here: state colours (ok / attention / down) and banner colours are computed
from the current :class:`QPalette` (light or dark) and pushed to a WCAG contrast of at least 4.5
against the background they are drawn on. :func:`follow_system_scheme` keeps the application's
palette in step with the desktop's light/dark scheme (``QStyleHints.colorScheme``, Qt 6.5+) where
the platform theme does not already do it; widgets re-read :func:`colors` on ``PaletteChange``.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette

#: minimum contrast between text and its background (WCAG AA for normal text)
MIN_CONTRAST = 4.5


def _channel(value: float) -> float:
    value /= 255.0
    return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4


def luminance(color: QColor) -> float:
    return 0.2126 * _channel(color.red()) + 0.7152 * _channel(color.green()) + 0.0722 * _channel(color.blue())


def contrast_ratio(a: QColor, b: QColor) -> float:
    la, lb = luminance(a), luminance(b)
    hi, lo = max(la, lb), min(la, lb)
    return (hi + 0.05) / (lo + 0.05)


def is_dark(palette: QPalette | None = None) -> bool:
    pal = palette if palette is not None else QGuiApplication.palette()
    return luminance(pal.color(QPalette.ColorRole.Window)) < 0.2


def mix(a: QColor, b: QColor, t: float) -> QColor:
    """``a`` moved a fraction ``t`` towards ``b``."""
    return QColor(round(a.red() + (b.red() - a.red()) * t), round(a.green() + (b.green() - a.green()) * t),
                  round(a.blue() + (b.blue() - a.blue()) * t))


def readable(fg: QColor, bg: QColor, minimum: float = MIN_CONTRAST) -> QColor:
    """``fg`` darkened or lightened (away from ``bg``) until it reads on ``bg``."""
    target = QColor(Qt.GlobalColor.black) if luminance(bg) > 0.18 else QColor(Qt.GlobalColor.white)
    color = QColor(fg)
    step = 0.0
    while contrast_ratio(color, bg) < minimum and step < 1.0:
        step += 0.05
        color = mix(fg, target, step)
    return color


def _hue(h: int, s: int, light: int) -> QColor:
    return QColor.fromHsl(h, s, light)


@dataclass(frozen=True)
class Colors:
    good: QColor
    warn: QColor
    bad: QColor
    muted: QColor
    border: QColor
    banner_bg: QColor  # the sandbox banner: a calm amber tint of the window colour
    banner_fg: QColor
    banner_border: QColor
    problem_bg: QColor  # the problem banner: a red tint
    problem_fg: QColor
    problem_border: QColor
    link: QColor  # links on the banner
    field_border: QColor  # the outline of text fields (visible on panels of the same colour)
    dark: bool


def colors(palette: QPalette | None = None) -> Colors:
    pal = palette if palette is not None else QGuiApplication.palette()
    dark = is_dark(pal)
    base = pal.color(QPalette.ColorRole.Base)
    window = pal.color(QPalette.ColorRole.Window)
    text = pal.color(QPalette.ColorRole.WindowText)
    lightness = 170 if dark else 95
    good = readable(_hue(130, 160, lightness), base)
    warn = readable(_hue(35, 230, lightness), base)
    bad = readable(_hue(0, 200, lightness + 10), base)
    muted = readable(mix(text, window, 0.45), base)
    border = mix(window, text, 0.22)
    amber = _hue(45, 220, 120)
    red = _hue(0, 200, 120)
    banner_bg = mix(window, amber, 0.30 if dark else 0.18)
    problem_bg = mix(window, red, 0.30 if dark else 0.14)
    return Colors(
        good=good, warn=warn, bad=bad, muted=muted, border=border,
        banner_bg=banner_bg, banner_fg=readable(text, banner_bg, 7.0), banner_border=mix(banner_bg, amber, 0.5),
        problem_bg=problem_bg, problem_fg=readable(_hue(0, 160, 200 if dark else 60), problem_bg),
        problem_border=mix(problem_bg, red, 0.5),
        link=readable(pal.color(QPalette.ColorRole.Link), banner_bg), field_border=mix(base, text, 0.35),
        dark=dark,
    )


def _css(color: QColor) -> str:
    return color.name(QColor.NameFormat.HexRgb)


def stylesheet(palette: QPalette | None = None) -> str:
    """The window's stylesheet for this palette. No rule sets a label's text colour: status and
    error labels colour themselves through their palette (see ``widgets.StatusLabel``)."""
    c = colors(palette)
    return f"""
QFrame#panel {{ background: palette(base); border: 1px solid {_css(c.border)}; border-radius: 6px; }}
QLabel#panelTitle {{ font-weight: 600; font-size: 11pt; }}
QStatusBar QLabel {{ padding: 0 8px; }}
QTableView {{ border: none; }}
QLabel#modeBanner {{ background: {_css(c.banner_bg)}; color: {_css(c.banner_fg)};
                    border: 1px solid {_css(c.banner_border)}; border-radius: 6px; padding: 6px 10px; }}
QLabel#problemBanner {{ background: {_css(c.problem_bg)}; color: {_css(c.problem_fg)};
                       border: 1px solid {_css(c.problem_border)}; border-radius: 6px; padding: 6px 10px; }}
QLabel#qrView {{ border: 1px dashed {_css(c.border)}; border-radius: 6px; background: palette(base); }}
QLabel#pairCode {{ font-size: 22pt; font-weight: 700; letter-spacing: 3px; }}
QLabel#countdown {{ font-weight: 600; }}
QScrollArea#linkScroll, QWidget#linkBody {{ background: transparent; }}
QLineEdit {{ border: 1px solid {_css(c.field_border)}; border-radius: 3px; padding: 3px 4px;
            background: palette(base); }}
QLineEdit:focus {{ border: 1px solid palette(highlight); }}
"""


def light_palette() -> QPalette:
    """Qt's own light palette (what Fusion uses without a platform theme)."""
    pal = QPalette(QColor.fromHsl(0, 0, 239))
    pal.setColor(QPalette.ColorRole.Base, QColor(Qt.GlobalColor.white))
    pal.setColor(QPalette.ColorRole.AlternateBase, QColor.fromHsl(0, 0, 246))
    pal.setColor(QPalette.ColorRole.PlaceholderText, QColor.fromHsl(0, 0, 110))
    return pal


def dark_palette() -> QPalette:
    """A dark palette for platforms whose theme does not provide one."""
    window, base, text = QColor.fromHsl(220, 10, 40), QColor.fromHsl(220, 12, 28), QColor.fromHsl(0, 0, 232)
    pal = QPalette()
    roles = QPalette.ColorRole
    for role, color in ((roles.Window, window), (roles.Base, base), (roles.AlternateBase, QColor.fromHsl(220, 10, 34)),
                        (roles.WindowText, text), (roles.Text, text), (roles.ButtonText, text),
                        (roles.Button, QColor.fromHsl(220, 10, 52)), (roles.ToolTipBase, base),
                        (roles.ToolTipText, text), (roles.PlaceholderText, QColor.fromHsl(0, 0, 150)),
                        (roles.Highlight, QColor.fromHsl(210, 160, 110)),
                        (roles.HighlightedText, QColor(Qt.GlobalColor.white)),
                        (roles.Link, QColor.fromHsl(210, 200, 170)), (roles.LinkVisited, QColor.fromHsl(270, 120, 180)),
                        (roles.Light, QColor.fromHsl(220, 10, 70)), (roles.Midlight, QColor.fromHsl(220, 10, 58)),
                        (roles.Mid, QColor.fromHsl(220, 10, 45)), (roles.Dark, QColor.fromHsl(220, 10, 20)),
                        (roles.Shadow, QColor(Qt.GlobalColor.black))):
        pal.setColor(role, color)
    for role in (roles.WindowText, roles.Text, roles.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, QColor.fromHsl(0, 0, 130))
    return pal


def apply_scheme(scheme: Qt.ColorScheme) -> None:
    """Make the application palette match ``scheme`` when the platform theme did not."""
    app = QGuiApplication.instance()
    if not isinstance(app, QGuiApplication):
        return
    want_dark = scheme is Qt.ColorScheme.Dark
    if want_dark != is_dark(app.palette()):
        QGuiApplication.setPalette(dark_palette() if want_dark else light_palette())


_follower: QObject | None = None


def follow_system_scheme() -> None:
    """Track the desktop's light/dark scheme from now on (idempotent, one hook per application)."""
    global _follower
    app = QGuiApplication.instance()
    if not isinstance(app, QGuiApplication) or (_follower is not None and _follower.parent() is app):
        return
    hints = app.styleHints()
    follower = QObject(app)
    hints.colorSchemeChanged.connect(apply_scheme)
    _follower = follower
    if hints.colorScheme() is not Qt.ColorScheme.Unknown:
        apply_scheme(hints.colorScheme())


__all__ = [
    "MIN_CONTRAST",
    "Colors",
    "apply_scheme",
    "colors",
    "contrast_ratio",
    "dark_palette",
    "follow_system_scheme",
    "is_dark",
    "light_palette",
    "readable",
    "stylesheet",
]
