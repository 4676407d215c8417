import os

import pytest
import torch

# Progress bars are for people; tests read files and return values.
os.environ.setdefault("KDCOMPILE_QUIET", "1")
torch.set_num_threads(2)


@pytest.fixture
def tiny_cnn():
    from kdcompile.models import mnist_cnn

    torch.manual_seed(0)
    return mnist_cnn(width=4).eval()
