"""The five levels by name, and what the hall's views call them."""

LEVELS = ("very_satisfied", "satisfied", "basically_satisfied", "dissatisfied", "very_dissatisfied")
LEVEL_TEXT = {
    "very_satisfied": "非常满意",
    "satisfied": "满意",
    "basically_satisfied": "基本满意",
    "dissatisfied": "不满意",
    "very_dissatisfied": "非常不满意",
}
GOOD_LEVELS = ("very_satisfied", "satisfied")
BAD_LEVELS = ("dissatisfied", "very_dissatisfied")
