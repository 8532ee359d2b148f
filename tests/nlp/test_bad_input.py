"""Bad text data on the command line: one line, exit code 2, no run folder left behind."""

import pytest

from tapweight.cli import main


@pytest.mark.parametrize("task,name,content,message", [
    ("sst2", "missing.tsv", None, "does not exist"),
    ("sst2", "empty.csv", "", "could not read"),
    ("stsb", "train.tsv", "sentence1\tsentence2\tlabel\nhi\tthere\thigh\n", "must be numbers, found 'high'"),
    ("sst2", "train.tsv", "sentence\tlabel\nfine\tmaybe\n", "unknown label 'maybe'"),
])
def test_bad_data_file(tmp_path, capsys, task, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["run", "nlp", task, "--data", str(path), "--model", "tiny", "--out", str(out), "--quiet"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err
    assert not out.exists()
