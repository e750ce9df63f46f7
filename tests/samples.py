"""Config texts several test modules start from (each test changes what it checks)."""

THREE_ARMS = """
[[experiment]]
name = "three-arms"
start = 2026-12-01T00:00:00Z
slice = [0.0, 0.5]
holdout = 0.05
control = "model"
variants = [
  { name = "model", kind = "model", weight = 2 },
  { name = "pause", kind = "offer", offer = "pause_2m" },
  { name = "discount", kind = "offer", offer = "discount_30_3m" },
]
"""
SECOND = """
[[experiment]]
name = "other-half"
start = 2026-12-01T00:00:00Z
slice = [0.5, 1.0]
variants = [{ name = "rules", kind = "rules" }, { name = "nothing", kind = "none" }]
"""
