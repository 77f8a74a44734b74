#!/usr/bin/env bash
# The configs, sweeps and the train entry's tests on the newest Hydra 1.4 pre-release, beside .venv's pinned stable
# Hydra 1.3 (CI runs both: .ci/run). .venv-hydra14 holds only hydra-core 1.4 and omegaconf 2.4; the rest (torch,
# Lightning, the project itself, pytest) comes from .venv, whose site-packages a .pth file adds after the venv's own,
# so there is no second copy of torch. Run after `make install-dev`; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-hydra14
test -x "$VENV/bin/python" || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --pre --no-deps "hydra-core>=1.4.0rc3,<1.5" "omegaconf>=2.4.1rc1,<2.5"
purelib() { "$1" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }
echo "import site; site.addsitedir('$(purelib .venv/bin/python)')" > "$(purelib "$VENV/bin/python")/zz_cifar_lit_dev.pth"
"$VENV/bin/python" -c "import hydra, omegaconf; print('hydra-core', hydra.__version__, 'omegaconf', omegaconf.__version__)"
"$VENV/bin/python" -m pytest -n auto --dist loadgroup -q \
    tests/test_config.py tests/test_job_name.py tests/test_hydra_compat.py tests/test_optuna_upstream.py \
    tests/test_sweeps.py::test_pruned_grid_runs_every_cell_of_the_plain_sweep_and_stops_the_bad_ones_early \
    tests/test_sweeps.py::test_the_project_sweeper_is_found_from_any_folder \
    tests/test_train.py::test_multirun_summarises_itself_and_survives_a_failing_job "$@"
