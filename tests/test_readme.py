"""The README's front door works: every command in its code blocks composes (a typo in an override fails here, not in
a reader's shell), and every relative link of README.md and docs/ points to a file that is there (and to a heading
that is there, when it names one).

Commands are checked by composing their configs, as Hydra's ``--cfg job`` does, without training: ``python -m
cifar_lit.<entry> ...`` and ``make train ARGS="..."`` compose with the overrides written (a multirun: every job of
the sweep), resolved; ``make <target>`` needs that target in the Makefile; ``tensorboard`` needs TensorBoard. A
command of another kind fails the test until this file learns how to check it. One command also goes through the
real command line (``--cfg job``), entry point and Hydra's parser included."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict

from tests.conftest import CONF_DIR, ROOT, compose_train, run_cli

README = ROOT / "README.md"
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


# ------------------------------------------------------------------------------------------ the README's commands
def code_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def commands(text: str) -> list[list[str]]:
    """The commands of the text's code blocks, each as its words (continuation lines joined, comments dropped,
    leading ``VAR=value`` assignments dropped)."""
    found = []
    for block in code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
                words.pop(0)
            if words:
                found.append(words)
    return found


README_COMMANDS = commands(README.read_text())


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def jobs(args: list[str]) -> list[list[str]]:
    """The overrides of each job the command runs: one job, or every job of a multirun's sweep (Hydra's basic
    sweeper's expansion of comma lists and ranges)."""
    multirun = "-m" in args or "--multirun" in args
    overrides = [arg for arg in args if arg not in ("-m", "--multirun")]
    assert all(not arg.startswith("-") for arg in overrides), f"an option this test does not know: {args}"
    if not multirun:
        return [overrides]
    parsed = OverridesParser.create().parse_overrides(overrides)
    (batch,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return batch


def check_composes(entry: str, overrides: list[str], output_dir: Path) -> None:
    """``python -m cifar_lit.<entry> <overrides> --cfg job``, in process: the config composes and resolves."""
    assert (CONF_DIR / f"{entry}.yaml").is_file(), f"cifar_lit.{entry} has no config of its own to compose"
    cfg = compose_train(overrides, output_dir=output_dir, config_name=entry)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.to_container(cfg, resolve=True)  # an interpolation that cannot resolve raises here


def check(words: list[str], output_dir: Path) -> None:
    """Whatever ``words`` (a README command) needs to be right."""
    program, *args = words
    if program == "python" and args[:1] == ["-m"] and args[1].startswith("cifar_lit."):
        entry = args[1].removeprefix("cifar_lit.")
        for job in jobs(args[2:]):
            check_composes(entry, job, output_dir)
    elif program == "make":
        targets = [arg for arg in args if "=" not in arg] or ["all"]
        variables = dict(arg.split("=", 1) for arg in args if "=" in arg)
        assert set(targets) <= make_targets(), f"the Makefile has no target {set(targets) - make_targets()}"
        assert set(variables) <= {"ARGS"}, f"a make variable the README should not need: {variables}"
        if "train" in targets:
            check_composes("train", shlex.split(variables.get("ARGS", "")), output_dir)
    elif program == "tensorboard":
        assert "--logdir" in args and importlib.util.find_spec("tensorboard") is not None
    elif program == "git":
        assert args[:1] == ["clone"], words
    else:
        pytest.fail(f"test_readme does not know how to check {shlex.join(words)!r}: teach it (check())")


def test_readme_shows_the_promised_commands():
    """The quick start's and the tour's commands are there: the smoke run, the default run, the tests, a training, an
    lr x batch-size sweep, TensorBoard."""
    shown = [shlex.join(words) for words in README_COMMANDS]
    for expected in ["make train ARGS=experiment=smoke", "make train", "make test", "tensorboard --logdir outputs"]:
        assert expected in shown
    train = [words for words in README_COMMANDS if words[:3] == ["python", "-m", "cifar_lit.train"]]
    assert any("-m" not in words[3:] for words in train)
    assert any(
        "-m" in words[3:]
        and any(w.startswith("optimizer.lr=") and "," in w for w in words)
        and any(w.startswith("data.batch_size=") and "," in w for w in words)
        for words in train
    )


@pytest.mark.parametrize("words", README_COMMANDS, ids=[shlex.join(words) for words in README_COMMANDS])
def test_readme_command_composes(words, tmp_path):
    check(words, tmp_path)


@pytest.mark.parametrize(
    "words",
    [
        ["python", "-m", "cifar_lit.train", "optimizer.lrr=0.1"],  # a key that is not there
        ["python", "-m", "cifar_lit.train", "model=four_block"],  # an option that is not there
        ["python", "-m", "cifar_lit.train", "-m", "optimizer.lr=0.1,0.01", "data.batch_sise=64,128"],
        ["make", "train", "ARGS=experiment=smok"],
        ["make", "tests"],
    ],
    ids=["unknown key", "unknown option", "sweep with a typo", "make ARGS with a typo", "unknown make target"],
)
def test_a_typo_in_a_command_fails(words, tmp_path):
    """What this file checks would catch a typo in a README command."""
    with pytest.raises((HydraException, AssertionError)):
        check(words, tmp_path)


def test_readme_training_command_through_the_cli():
    """The README's first single training command through the real entry point, with ``--cfg job``: it prints the
    job's config (training nothing), and that is the config composed above."""
    words = next(w for w in README_COMMANDS if w[:3] == ["python", "-m", "cifar_lit.train"] and "-m" not in w[3:])
    result = run_cli("train", *words[3:], "--cfg", "job", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    composed = compose_train(words[3:])
    with open_dict(composed):
        del composed["hydra"]
    assert OmegaConf.create(result.stdout) == composed


# ----------------------------------------------------------------------------------------------------- links
DOCS = [README, *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """The text without code blocks and inline code (where brackets and parentheses are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file: lower case, punctuation dropped, spaces as hyphens,
    a repeated one numbered."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", FENCE.sub("", path.read_text()), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def relative_links(path: Path) -> list[str]:
    return [target for target in LINK.findall(prose(path.read_text())) if not re.match(r"[a-z][a-z+.-]*:", target)]


def test_the_pages_have_links():
    assert len(relative_links(README)) >= 10 and all(path.suffix == ".md" for path in DOCS)


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        file, _, anchor = target.partition("#")
        destination = (page.parent / file).resolve() if file else page
        if not destination.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target} (no such heading)")
    return broken


@pytest.mark.parametrize("page", DOCS, ids=[str(path.relative_to(ROOT)) for path in DOCS])
def test_relative_links_point_to_what_is_there(page):
    assert broken_links(page) == [], page.relative_to(ROOT)


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Its `second` part: here\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md) [ok](other.md#its-second-part-here) [ok](#page) [web](https://example.com)\n"
        "`[code](missing.md)` [gone](missing.md) [no heading](other.md#nowhere) ![img](pic.png)\n"
        "```\n[in a block](missing_too.md)\n```\n"
    )
    assert broken_links(page) == [
        "missing.md (no such file)",
        "other.md#nowhere (no such heading)",
        "pic.png (no such file)",
    ]
