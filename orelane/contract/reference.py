"""The contract's reference tables in Markdown, generated from the code.

docs/interfaces.md embeds these tables verbatim and a test checks they still
match, so the document cannot drift from the code.
"""

from __future__ import annotations

from orelane.contract import measurements, registers, topics


def topic_table() -> str:
    rows = ["| leaf under orelane/v1/<site>/<lane>/ | QoS | retained | payload | producer |", "|---|---|---|---|---|"]
    rows += [f"| `{s.leaf}` | {s.qos} | {'yes' if s.retained else 'no'} | {s.payload} | {s.producer} |"
             for s in topics.TOPICS.values()]
    return "\n".join(rows)


def register_table(regmap: registers.RegisterMap) -> str:
    fc = "4 (read input registers)" if regmap.table == registers.INPUT else "3 read / 16 write (holding registers)"
    rows = [f"**{regmap.device}**: function code {fc}", "",
            "| address | name | type | unit | plausible range | meaning |", "|---|---|---|---|---|---|"]
    for r in regmap.registers:
        rng = "" if r.low is None else f"{r.low:g} to {r.high:g}"
        rows.append(f"| {r.address} | `{r.name}` | {r.kind} | {r.unit} | {rng} | {r.description} |")
    return "\n".join(rows)


def measurement_table() -> str:
    rows = ["| measurement | tags | fields |", "|---|---|---|"]
    rows += [f"| `{name}` | {', '.join(tags + tuple(t + '?' for t in measurements.OPTIONAL_TAGS.get(name, ())))} "
             f"| {', '.join(fields)} |" for name, (tags, fields) in measurements.MEASUREMENTS.items()]
    return "\n".join(rows)


def all_tables() -> list[str]:
    return [topic_table(), measurement_table()] + [register_table(m) for m in (
        registers.BELT_SCALE, registers.RADIATION_PORTAL, registers.SAMPLER_COMMAND, registers.SAMPLER_STATUS)]


if __name__ == "__main__":
    print("\n\n".join(all_tables()))
