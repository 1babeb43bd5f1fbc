"""dscourse.resume: the pieces that need no ranks (the whole round trip runs in notebook 07 under strict nbval)."""

import pytest

from dscourse.launch import LaunchError
from dscourse.resume import to_universal


def test_converting_a_folder_that_is_no_checkpoint_says_which_folder(tmp_path):
    with pytest.raises(LaunchError, match=f"ds_to_universal failed on {tmp_path}"):
        to_universal(tmp_path, tmp_path / "universal", timeout=300)
