"""Code 128 barcodes drawn as SVG, for the sample labels.

Code 128 is what every handheld scanner reads out of the box and what a label
printer prints crisply at 203 dpi. Text is encoded in code set B (printable
ASCII); runs of digits switch to code set C (two digits per symbol), which
keeps the 8-digit sample id short on a 62 mm label.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

# Bar and space widths (in modules) of symbol values 0..105, then STOP; ISO/IEC 15417 table 1.
PATTERNS: tuple[str, ...] = (
    "212222", "222122", "222221", "121223", "121322", "131222", "122213", "122312", "132212", "221213",
    "221312", "231212", "112232", "122132", "122231", "113222", "123122", "123221", "223211", "221132",
    "221231", "213212", "223112", "312131", "311222", "321122", "321221", "312212", "322112", "322211",
    "212123", "212321", "232121", "111323", "131123", "131321", "112313", "132113", "132311", "211313",
    "231113", "231311", "112133", "112331", "132131", "113123", "113321", "133121", "313121", "211331",
    "231131", "213113", "213311", "213131", "311123", "311321", "331121", "312113", "312311", "332111",
    "314111", "221411", "431111", "111224", "111422", "121124", "121421", "141122", "141221", "112214",
    "112412", "122114", "122411", "142112", "142211", "241211", "221114", "413111", "241112", "134111",
    "111242", "121142", "121241", "114212", "124112", "124211", "411212", "421112", "421211", "212141",
    "214121", "412121", "111143", "111341", "131141", "114113", "114311", "411113", "411311", "113141",
    "114131", "311141", "411131", "211412", "211214", "211232", "2331112",
)
CODE_C, CODE_B = 99, 100  # switch to code set C (from B) / to code set B (from C)
START_A, START_B, START_C, STOP = 103, 104, 105, 106
QUIET_ZONE_MODULES = 10  # blank margin each side that scanners need to find the code


def checksum(values: list[int]) -> int:
    """Modulo-103 check symbol of a start code followed by data values (the start code is weighted 1)."""
    return (values[0] + sum(i * v for i, v in enumerate(values[1:], start=1))) % 103


def symbol_values(text: str) -> list[int]:
    """Start code, data symbols and check symbol (without STOP) for printable-ASCII text."""
    if not text:
        raise ValueError("Code 128: nothing to encode (empty text)")
    bad = [c for c in text if not 32 <= ord(c) <= 126]
    if bad:
        raise ValueError(f"Code 128: {text!r} has {bad[0]!r}; labels carry printable ASCII (space to '~') only")
    values: list[int] = []
    code_set = ""
    i, n = 0, len(text)
    while i < n:
        run = 0
        while i + run < n and text[i + run].isdigit():
            run += 1
        # Code set C pays off for 4+ digits at either end of the text, or 6+ in the middle (two switches).
        if run >= 4 and (run >= 6 or i == 0 or i + run == n):
            pairs = run // 2 * 2
            if code_set != "C":
                values.append(START_C if not values else CODE_C)
                code_set = "C"
            values.extend(int(text[j:j + 2]) for j in range(i, i + pairs, 2))
            i += pairs
            continue
        if code_set != "B":
            values.append(START_B if not values else CODE_B)
            code_set = "B"
        values.append(ord(text[i]) - 32)
        i += 1
    return values + [checksum(values)]


def modules(text: str) -> list[int]:
    """Alternating bar and space widths in modules, starting with a bar and ending with the STOP bar."""
    widths: list[int] = []
    for value in symbol_values(text) + [STOP]:
        widths.extend(int(w) for w in PATTERNS[value])
    return widths


@dataclass(frozen=True)
class Bar:
    x_modules: int
    width_modules: int


def bars(text: str) -> tuple[list[Bar], int]:
    """The dark bars (offset by the left quiet zone) and the total width in modules, quiet zones included."""
    x = QUIET_ZONE_MODULES
    out: list[Bar] = []
    for k, width in enumerate(modules(text)):
        if k % 2 == 0:
            out.append(Bar(x, width))
        x += width
    return out, x + QUIET_ZONE_MODULES


def svg(text: str, *, module_mm: float = 0.3, height_mm: float = 12.0, caption: bool = True) -> str:
    """A standalone SVG of the barcode, sized in millimetres so it prints at the intended module width."""
    return _svg_document(*_barcode_group(text, module_mm=module_mm, height_mm=height_mm, caption=caption))


def _barcode_group(text: str, *, module_mm: float, height_mm: float, caption: bool,
                   x_mm: float = 0.0, y_mm: float = 0.0) -> tuple[str, float, float]:
    """SVG elements of a barcode placed at (x_mm, y_mm), and its width and height in mm."""
    if not 0.1 <= module_mm <= 2.0:
        raise ValueError(f"module_mm {module_mm} outside 0.1-2.0 mm (label printers manage 0.19 mm and up)")
    found, total = bars(text)
    width_mm = total * module_mm
    rects = "".join(f'<rect x="{x_mm + b.x_modules * module_mm:.3f}" y="{y_mm:.3f}" '
                    f'width="{b.width_modules * module_mm:.3f}" height="{height_mm:.3f}"/>' for b in found)
    parts = [f'<g fill="#000" shape-rendering="crispEdges">{rects}</g>']
    full_height = height_mm
    if caption:
        font_mm = 3.0
        parts.append(f'<text x="{x_mm + width_mm / 2:.3f}" y="{y_mm + height_mm + font_mm + 0.5:.3f}" '
                     f'font-family="DejaVu Sans Mono, monospace" font-size="{font_mm}" text-anchor="middle">'
                     f'{escape(text)}</text>')
        full_height += font_mm + 1.5
    return "".join(parts), width_mm, full_height


def _svg_document(body: str, width_mm: float, height_mm: float) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width_mm:.3f}mm" height="{height_mm:.3f}mm" '
            f'viewBox="0 0 {width_mm:.3f} {height_mm:.3f}">'
            f'<rect width="100%" height="100%" fill="#fff"/>{body}</svg>')


def label_svg(barcode: str, lines: list[str], *, width_mm: float = 62.0, height_mm: float = 29.0) -> str:
    """A sample label: the Code 128 barcode with its text under it, then a few lines of detail.

    The module width is the largest of 0.19-0.33 mm that fits the label with its quiet zones.
    """
    _, total = bars(barcode)
    module_mm = min(0.33, (width_mm - 2.0) / total)
    if module_mm < 0.19:
        raise ValueError(f"barcode {barcode!r} needs {total} modules; a {width_mm} mm label cannot print it at "
                         f"0.19 mm per module or more")
    bar_height_mm = 11.0
    code_width = total * module_mm
    group, _, used_height = _barcode_group(barcode, module_mm=module_mm, height_mm=bar_height_mm, caption=True,
                                           x_mm=(width_mm - code_width) / 2, y_mm=1.5)
    y = 1.5 + used_height + 2.6
    text = []
    for line in lines:
        if y > height_mm - 0.5:
            break
        text.append(f'<text x="2" y="{y:.2f}" font-family="DejaVu Sans, sans-serif" font-size="2.7">'
                    f'{escape(line)}</text>')
        y += 3.2
    return _svg_document(group + "".join(text), width_mm, height_mm)
