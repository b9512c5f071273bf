import os

import pytest
import torch

os.environ.setdefault("LDLM_QUIET", "1")
torch.set_num_threads(2)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def root():
    return ROOT


@pytest.fixture
def micro_cfg():
    from ldlm.config import load_config

    def make(*overrides):
        return load_config(os.path.join(ROOT, "configs", "micro.yaml"), list(overrides))

    return make
