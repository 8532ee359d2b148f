"""Bad molecular data on the command line: one line, exit code 2, no run folder left behind."""

import pytest

from tapweight.cli import main

HEADER = "num,name,p_np,smiles\n"


@pytest.mark.parametrize("content,message", [
    (None, "does not exist"),
    ("", "cannot read"),
    ("num,name,label,smiles\n1,a,1,CCO\n", "has no column 'p_np'"),
    (HEADER + "1,a,1,xyz\n2,b,0,qqq\n", "no SMILES in column 'smiles'"),
    (HEADER + "1,a,yes,CCO\n2,b,no,CCN\n", "label column 'p_np' holds 'yes'"),
])
def test_bad_data_file(tmp_path, capsys, content, message):
    path = tmp_path / "bbbp.csv"
    if content is not None:
        path.write_text(content)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["run", "mol", "bbbp", "--data", str(path), "--out", str(out), "--quiet"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err
    assert not out.exists()
