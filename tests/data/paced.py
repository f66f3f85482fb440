"""A test plugin (tests/test_recovery.py): tiny MLPs that pause 10 ms a forward pass, so
runs last long enough to be stopped on any machine; the pause changes no number."""

import math
import time

from torch import nn

from activescale.plugins import register_model


class Pause(nn.Module):
    def forward(self, x):
        time.sleep(0.01)
        return x


def build(cfg, input_shape, num_outputs):
    width = {"xxs": 8, "xs": 16}[str(cfg.size)]
    inputs = math.prod(input_shape)
    return nn.Sequential(
        nn.Flatten(), Pause(), nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, num_outputs)
    )


register_model("paced", ["xxs", "xs"], build)
