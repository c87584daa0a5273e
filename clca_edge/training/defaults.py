"""Train's consistency defaults, in a module that imports nothing: the CLI reads them for its option
defaults when it loads, and it also loads on the device's Python 3.8 runtime (no training code)."""

# The consistency weight `train` uses unless told (BENCHMARKS.md "Field defaults on real photos"):
# half AugMix's 12 (on real photos 12 cost 3-5 points of clean accuracy, 6 none on one set; 30 made
# the tiny model predict one class), ramped in over the first half of the run.
DEFAULT_CONSISTENCY = 6.0
DEFAULT_CONSISTENCY_RAMP = 0.5
# AugMix's mixing (width 3, alpha 1, its own values): each perturbed view is the clean crop blended
# with 3 field chains; on real photos it kept clean accuracy where a bare field chain cost 4 points.
DEFAULT_CONSISTENCY_MIX = 3
