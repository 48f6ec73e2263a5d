import pytest

from bettersynth.cli.main import COMMANDS, build_parser, main


def test_every_command_group_registers():
    parser = build_parser()
    subcommand = {"data": ["checkout", "x"], "algebra": ["cap", "src", "--n", "1", "--out", "o"], "analyze": ["r.yaml"]}
    for name in COMMANDS:
        assert parser.parse_known_args([name, *subcommand.get(name, [])])[0].command == name


def test_compile_writes_ir(tmp_path, capsys):
    out = tmp_path / "loop.yaml"
    assert main(["compile", "--output", str(out)]) == 0
    assert "nvidia.com/gpu" in out.read_text()


def test_unknown_command_fails():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["quickstrat"])
