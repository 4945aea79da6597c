"""The shape of an OpenEDS row, declared once at the bottom of the house.

The frame size and the distance-map channels per config are what the pure functions,
the published schema (``openeds.schema`` imports them from here) and the training side
(``preprocessing.training``) all agree on. They live in the pure core, which imports
nothing of the project, so that every layer above can read them and the dependencies
run one way.
"""

HEIGHT = 400
WIDTH = 640

#: Distance-map channels per config: [not pupil, pupil] or the four classes.
DIST_CHANNELS = {"pupil": 2, "full": 4}
