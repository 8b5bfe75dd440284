"""The run table of the fused convolution kernels (batteries_jax/_conv_plan.py)."""
import e3nn_jax as e3nn
import numpy as np

from batteries_jax import _paths
from batteries_jax._conv_plan import RUN_COLS, SLOTS, conv_plan
from batteries_jax.e3nn import tensor_product_plan

Y = e3nn.Irreps("0e+1o+2e+3o")


def plan_for(irreps, filt=None):
    f = None if filt is None else tuple(e3nn.Irreps(filt)[i].ir for i in range(len(e3nn.Irreps(filt))))
    paths, _ = tensor_product_plan(e3nn.Irreps(irreps), Y, f, "component", True, True)
    return paths, conv_plan(paths)


def test_runs_cover_every_path_once():
    paths, plan = plan_for("64x0e+64x1o+64x2e+64x3o", "0e+0o+1e+1o+2e+2o+3e+3o")
    table = plan.run_table()
    assert table.shape == (4, RUN_COLS) and plan.scale_table().shape == (4, SLOTS)
    assert sorted(table[:, 0]) == [0, 1, 2, 3] and all(table[:, 2] == 64)
    assert sum(bin(int(m)).count("1") for m in table[:, 4]) == len(paths.rows) == 34
    assert plan.blocks == 8 and plan.l3max == 3
    assert not (plan.zero_out or plan.zero_w or plan.zero_x)


def test_unfiltered_and_unused_inputs():
    _, plan = plan_for("8x0e+4x3o")
    assert plan.l3max == 6 and plan.blocks == 2
    _, plan = plan_for("2x0e+1x1e", "0e")  # 1e reaches no 0e output: its x columns are unused
    assert plan.zero_x and not plan.zero_out


def test_layouts_the_kernels_do_not_take():
    assert conv_plan(_paths.simple_paths()) is None  # no weights; outputs shared by paths
    paths, _ = plan_for("4x0e+4x1o")
    doubled = _paths.PathList(paths.rows + paths.rows[:1], paths.scales + paths.scales[:1],
                              paths.x_width, paths.y_width, paths.w_width, paths.o_width)
    assert conv_plan(doubled) is None  # one output written by two paths
