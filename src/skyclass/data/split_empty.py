"""Which classes a split leaves without images in a part, said in one line with the counts."""

from __future__ import annotations

#: The parts of a split, in the order they are reported.
PARTS = ("train", "val", "test")


def empty_parts(
    counts: dict[str, dict[str, int]], fractions: dict[str, float]
) -> dict[str, list[str]]:
    """class -> the parts where it has no image, among the parts with a fraction > 0.
    ``counts``: part -> class -> images (a class absent from a part counts 0)."""
    labels = sorted({label for per_class in counts.values() for label in per_class})
    empty: dict[str, list[str]] = {}
    for label in labels:
        for part in PARTS:
            if fractions.get(part, 0) > 0 and not counts.get(part, {}).get(label):
                empty.setdefault(label, []).append(part)
    return empty


def empty_message(counts: dict[str, dict[str, int]], empty: dict[str, list[str]]) -> str:
    """``small_quadcopters has 0 val images (train 329, val 0, test 100); ...``"""
    return "; ".join(
        f"{label} has 0 {'/'.join(where)} images ("
        + ", ".join(f"{part} {counts.get(part, {}).get(label, 0)}" for part in PARTS)
        + ")"
        for label, where in empty.items()
    )
