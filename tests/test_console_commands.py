"""The console commands a pip install puts on PATH run the same programs as the scripts."""

import os
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)
COMMANDS = {
    "imgclf-train": "--train_dataset_path",
    "imgclf-eval": "--model_path",
    "imgclf-eval-serving": "--model_name",
    "imgclf-serve": "--model_base_path",
    "imgclf-cluster": "--num_workers",
    "imgclf-predict": "--model_path",
}


@pytest.mark.parametrize("command, flag", COMMANDS.items())
def test_console_command_is_installed_and_shows_its_flags(command, flag):
    path = os.path.join(BIN, command)
    assert os.path.isfile(path), f"{command} is not installed beside {sys.executable}"
    result = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {command} ")
    assert flag in result.stdout


def test_console_command_usage_error_is_one_line_under_its_own_name():
    result = subprocess.run(
        [os.path.join(BIN, "imgclf-train"), "--batch_size", "many"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == "imgclf-train: error: argument --batch_size: invalid int value: 'many'\n"
