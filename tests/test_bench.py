"""The benchmark harness on a tiny shape: the structure of what it reports (not the timings)."""

import json
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.__main__ import main
from tapweight.errors import TapweightError

# one torch thread: on a loaded 2-core machine two threads spin against each other
TINY = ["step", "--shape", "tiny", "--models", "toy", "--repeats", "2", "--warmup", "1", "--threads", "1"]
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "imagemol" / "pretrain_toy.csv"
BBBP = DATA.parents[1] / "moleculenet" / "bbbp.csv"


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_step_reports_every_variant(tmp_path):
    out = tmp_path / "step.json"
    variants = {"plain", "default", "fd", "fd-forward", "fd-1/4", "jvp", "neumann", "cg"}
    result = main([*TINY, "--no-memory", "--variants", ",".join(sorted(variants)), "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["variants"].keys() == result["variants"].keys() == variants
    for v in saved["variants"].values():
        assert len(v["times_s"]) == 2 and v["median_s"] > 0 and v["pretrain_images_per_s"] > 0
    assert saved["variants"]["plain"]["ratio"] == pytest.approx(1.0)
    assert saved["shape"]["pretrain_batch"] == 4 and saved["repeats"] == 2
    assert set(saved["targets"]) == {"step_ratio", "betty_speedup", "peak_ratio"}
    assert saved["targets"]["peak_ratio"]["met"] is None  # no memory measured
    assert len(saved["load_average"]["before"]) == 3 and "torch" in saved["machine"]


def test_step_times_every_weighting_method():
    from bench.workload import METHODS

    result = main([*TINY, "--no-memory", "--variants", ",".join(["plain", *METHODS])])
    assert set(result["variants"]) == {"plain", *METHODS}
    for name, v in result["variants"].items():
        assert v["median_s"] > 0 and not v["notes"], name


def test_profile_splits_a_step_into_its_levels(tmp_path):
    result = main([*TINY, "--no-memory", "--variants", "plain,fd,cg", "--profile", str(tmp_path / "prof")])
    phases = {name: v["phases_s"] for name, v in result["variants"].items()}
    assert set(phases["plain"]) == {"step", "level_I"}  # plain runs level I only
    for name in ("fd", "cg"):
        p = phases[name]
        assert set(p) == {"step", "level_I", "level_II", "level_III", "hypergradient"}
        assert p["level_I"] + p["level_II"] + p["level_III"] <= p["step"]
        assert 0 < p["hypergradient"] <= p["level_III"]
        table = (tmp_path / "prof" / f"profile_{name}.txt").read_text()
        assert "Self CPU" in table and "tapweight.level_III" in table  # the engine's ranges


@pytest.mark.parametrize("args, message", [
    (["--profile", "{tmp}/taken"], "is a file"),
    (["--repeats", "0"], "--repeats 0: give at least 1"),
    (["--profile-steps", "0"], "--profile-steps 0"),
    (["--warmup", "-1"], "--warmup -1"),
])
def test_bad_step_options_are_one_line_errors(tmp_path, args, message):
    (tmp_path / "taken").write_text("")
    with pytest.raises(TapweightError, match=message):
        main([*TINY, *[a.format(tmp=tmp_path) for a in args]])


def test_missing_betty_is_a_note_not_a_failure(monkeypatch):
    monkeypatch.setitem(sys.modules, "betty", None)  # `import betty` now fails as if absent
    from tapweight.method.betty import import_betty

    with pytest.raises(TapweightError, match="--no-deps --ignore-requires-python betty-ml==0.2.1"):
        import_betty()
    result = main([*TINY, "--no-memory", "--variants", "plain,betty"])
    betty = result["variants"]["betty"]
    assert "median_s" not in betty and any("pip install" in n for n in betty["notes"])
    assert result["targets"]["betty_speedup"]["value"] is None


def test_betty_variant_runs_when_installed():
    pytest.importorskip("betty", reason="betty-ml is not installed")
    result = main([*TINY, "--no-memory", "--variants", "plain,default,betty"])
    assert result["targets"]["betty_speedup"]["value"] > 0


def test_avenues_time_each_way_of_taking_the_extra_forward():
    result = main(["avenues", "--shape", "tiny", "--models", "toy", "--threads", "1", "--repeats", "1"])
    rows = result["rows"]
    assert list(rows)[0] == "level I step (forward + backward)" and rows[list(rows)[0]]["x_level_I"] == 1.0
    assert {"engine", "3 passes", "1 batched pass", "inference_mode", "bf16 autocast"} <= set(rows)
    assert all(r["median_s"] > 0 for r in rows.values()) and "compiled" in result["notes"]


def test_unknown_variant_is_a_one_line_error():
    with pytest.raises(TapweightError, match="unknown variant"):
        main([*TINY, "--variants", "plain,darts"])


@pytest.mark.slow
def test_cpu_peak_memory_per_variant_in_subprocesses():
    result = main([*TINY, "--variants", "plain,fd"])
    for v in result["variants"].values():
        assert v["peak_bytes"] > 0
    assert result["variants"]["plain"]["peak_ratio"] == pytest.approx(1.0)
    assert "subprocess" in result["memory_method"]


def test_data_throughput_rows():
    pytest.importorskip("rdkit")
    if not DATA.is_file():
        pytest.skip(f"no {DATA}")
    result = main(["data", "--smiles", str(DATA), "--n", "8", "--size", "32", "--batch", "4",
                   "--workers", "1"])
    stages = [r["stage"] for r in result["rows"]]
    assert any("without the cache" in s for s in stages) and any("from the cache" in s for s in stages)
    assert all(r["images_per_s"] > 0 and r["images"] > 0 for r in result["rows"])


def test_startup_times_every_quick_command():
    from bench import startup

    result = main(["startup", "--repeats", "1"])
    commands = [r["command"] for r in result["rows"]]
    assert commands[:5] == ["tapweight --help", "tapweight --version", "tapweight list tasks",
                            "tapweight list domains", "tapweight plugins"]
    assert commands[-1] == "python -c 'import torch'" and len(commands) == len(startup.COMMANDS) + 1
    assert {"tapweight run nosuchdomain task", "tapweight run"} <= set(commands)
    shows = [c for c in commands if c.startswith("tapweight show ")]
    assert shows == ["tapweight show RUN", "tapweight show RUN --config", "tapweight show RUN --nosuchoption"]
    assert all(r["median_s"] > 0 and r["repeats"] == 1 for r in result["rows"])
    assert startup.table(result).count("\n") == len(commands) + 1  # header, rule, a row each


def test_gpu_check_runs_on_the_cpu_at_a_tiny_shape(tmp_path):
    """The prepared GPU check (bench/gpu.py) end to end, so that it cannot rot between GPU loans:
    every part on the CPU at tiny settings, the end-to-end pass on 120 rows of BBBP."""
    pytest.importorskip("rdkit")
    if not BBBP.is_file():
        pytest.skip(f"no {BBBP}")
    rows = tmp_path / "bbbp.csv"
    rows.write_text("\n".join(BBBP.read_text().splitlines()[:121]) + "\n")
    main(["gpu", "--device", "cpu", "--out", str(tmp_path / "gpu"), "--repeats", "1", "--warmup", "0",
          "--bbbp", str(rows), "--study-steps", "2", "--run-steps", "2", "--budget-s", "3000"])
    saved = json.loads((tmp_path / "gpu" / "gpu.json").read_text())
    assert saved["errors"] == {} and saved["skipped"] == {}
    collectives = saved["nccl"]
    assert collectives["passed"] and collectives["2 process(es)"]["backend"] == "gloo", collectives
    nlp = saved["nlp_jvp"]  # neumann's inverses do not converge at these settings: it need only run
    assert nlp["jvp"]["finite"] and len(nlp["neumann"]["hypergradients"]) == 3
    pipeline = saved["data"]["run"]  # the corpus stream of the cpu preset's run: no pinned memory
    assert pipeline["pin_memory"] is False and [r["batches"] for r in pipeline["rows"]] == [
        "first epoch (draw + cache)", "cached"] and all(r["images_per_s"] > 0 for r in pipeline["rows"])
    assert {"plain", "default", "fd-forward", "jvp-1/16"} <= set(saved["step_bf16"]["variants"])
    assert "median_s" in saved["betty_bf16"]["variants"]["betty"]
    assert saved["step_fp32"]["variants"]["plain"]["ratio"] == pytest.approx(1.0)
    assert set(saved["precision"]) == {"fd, TF32 allowed", "fd, full float32"}
    assert saved["data"]["keeps_up"]["keeps_up"] in (True, False)
    study = saved["estimators"]
    assert study["estimators"]["jvp"]["mean_cosine"] == pytest.approx(1.0) and study["default"] in study["estimators"]
    e2e = saved["end_to_end"]
    assert [r["command"].split()[1] for r in e2e["rows"]] == ["run", "predict", "export", "--standalone"]
    assert e2e["passed"], e2e["rows"]
    assert (tmp_path / "gpu" / "e2e-preds.csv").stat().st_size > 0


def test_gpu_check_starts_no_part_it_cannot_finish(tmp_path):
    main(["gpu", "--device", "cpu", "--out", str(tmp_path), "--budget-s", "2"])
    saved = json.loads((tmp_path / "gpu.json").read_text())
    assert saved["errors"] == {} and saved["seconds"] == {}
    assert set(saved["skipped"]) == {"nccl", "nlp_jvp", "end_to_end", "data", "step_bf16", "precision",
                                     "estimators", "betty_bf16", "step_fp32"}


def test_a_part_past_the_budget_is_stopped():
    from bench.gpu import Budget, OutOfTime

    budget = Budget(0.2)
    budget.limit()
    try:
        with pytest.raises(OutOfTime):
            time.sleep(5)
    finally:
        budget.release()


@pytest.mark.slow
def test_corpus_scale_stages(tmp_path):
    """``bench corpus`` on 300 NCI molecules: every stage reports, and the pretraining run
    after stages 1–3 reads the prepared corpus and the cluster ids from the cache."""
    rdkit = pytest.importorskip("rdkit")
    lines = (Path(rdkit.RDConfig.RDDataDir) / "NCI" / "first_5K.smi").read_text().splitlines()[:300]
    corpus = tmp_path / "nci300.smi"
    corpus.write_text("\n".join(lines) + "\n")
    result = main(["corpus", str(corpus), "--workers", "1", "--batches", "3", "--size", "32",
                   "--batch", "8", "--keep", str(tmp_path / "work"), "--json", str(tmp_path / "c.json")])
    assert result["prepare"]["molecules"] + result["prepare"]["invalid"] == 300
    assert set(result["kmeans"]) == {100, 1000, 10000}
    assert all(r["seconds"] >= 0 and r["peak_mb"] >= r["base_mb"] > 0 for r in result["kmeans"].values())
    step = result["first_step"]
    assert step["corpus_from_cache"] and not step["kmeans_in_run"] and step["seconds"] > 0
    rows = result["stream"]["rows"]
    assert [(r["cache"], r["workers"]) for r in rows] == [("cold", 0), ("warm", 0), ("cold", 1), ("warm", 1)]
    assert all(r["images_per_s"] > 0 for r in rows)


def test_estimators_study_on_tabular_and_its_costs_from_a_step_run(tmp_path, capsys):
    """``bench estimators`` end to end on a small task: the exact estimator agrees with the
    reference, the differences with it on a smooth MLP; ``auto``'s pick is named; ``--costs``
    takes the step costs of a ``bench step`` file (a radius variant takes its estimator's)."""
    pytest.importorskip("tapweight_tabular")
    study = tmp_path / "study.json"
    main(["estimators", "tabular", "breast-cancer", "--steps", "3", "--val-batches", "2", "--threads", "1",
          "--estimators", "fd-forward,fd-forward@0.001,fd,jvp,jvp-1/8", "--json", str(study)])
    result = json.loads(study.read_text())
    rows = result["estimators"]
    assert list(rows) == ["fd-forward", "fd-forward@0.001", "fd", "jvp", "jvp-1/8"]
    assert rows["jvp"]["mean_cosine"] == pytest.approx(1.0) and rows["jvp"]["sq_deviation"] < 1e-12
    assert rows["fd"]["mean_cosine"] > 0.999 and rows["fd-forward"]["mean_cosine"] > 0.99
    assert rows["jvp-1/8"]["sq_deviation"] > rows["fd"]["sq_deviation"]  # an eighth of the batch: noisier
    assert result["val_variance"] is None  # breast-cancer's validation split is one batch of 64
    assert result["default"] == "fd-forward"
    costs = tmp_path / "step.json"
    costs.write_text(json.dumps({"variants": {"plain": {"ratio": 1.0}, "fd-forward": {"ratio": 1.35},
                                              "jvp-1/8": {"ratio": 1.2}}}))
    capsys.readouterr()
    main(["estimators", "tabular", "breast-cancer", "--reuse", str(study), "--costs", str(costs),
          "--plot", str(tmp_path / "cost.png")])
    printed = capsys.readouterr().out
    assert "| fd-forward (auto) | 1.35 |" in printed and "| fd-forward@0.001 | 1.35 |" in printed
    assert "| jvp-1/8 | 1.20 |" in printed and "| jvp | - |" in printed
    assert (tmp_path / "cost.png").stat().st_size > 0


def test_estimators_study_refuses_what_is_not_a_directional_estimator():
    for name, message in (("cg", "not a directional estimator"), ("fd@x", "must be a number")):
        with pytest.raises(TapweightError, match=message):
            main(["estimators", "tabular", "breast-cancer", "--steps", "2", "--estimators", name])


def test_a_user_error_from_python_m_bench_is_one_line_and_exit_2():
    """``python -m bench`` ends a TapweightError as the CLI does (``tapweight.errors.run_main``)."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "bench", "estimators", "mol", "bbbp", "--steps", "1"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --steps and --val-batches: give at least 2"


def test_alignment_reproduces_the_engines_hypergradient_from_its_norms_and_cosines(tmp_path, capsys):
    """``bench alignment`` on tabular (identity preconditioner, the exact ``jvp`` estimate,
    ``reference`` scale): the engine's dL_val/dλ_k must equal −2γ·cos_k·‖∇L_k‖·‖u_b‖ from
    the recorded norms and cosines, docs/known-answer.md's one-step formula."""
    pytest.importorskip("tapweight_tabular")
    out = tmp_path / "alignment.json"
    main(["alignment", "tabular", "breast-cancer", "--steps", "6", "--threads", "1",
          "--set", "reweight.hypergrad=jvp", "--json", str(out)])
    result = json.loads(out.read_text())
    gamma = 1e-3  # the tabular cpu preset's finetune.gamma
    for row in result["rows"]:
        expected = [-2 * gamma * c * g * row["u_b"] for c, g in zip(row["cosine"], row["grad_norm"])]
        assert row["hypergradient"] == pytest.approx(expected, rel=1e-4, abs=1e-12)
        assert all(-1 <= c <= 1 for c in row["cosine"])
    printed = capsys.readouterr().out
    assert printed.count("\n| ") == 1 + len(result["objectives"])  # the header, a row each


def test_every_k_steps_study_on_tabular(tmp_path, capsys):
    """``bench every``: k = 1 is the reference (distance 0); with k = 2 λ moves at steps 1 and
    3 only; each k's cost is a ratio to the plain step of the same process."""
    pytest.importorskip("tapweight_tabular")
    out = tmp_path / "every.json"
    main(["every", "tabular", "breast-cancer", "--steps", "3", "--seeds", "0,1", "--every", "2",
          "--threads", "1", "--json", str(out)])
    result = json.loads(out.read_text())
    lam = {k: torch.tensor(v) for k, v in result["lambda"].items()}
    assert set(lam) == {"1", "2"} and lam["2"].shape == (2, 3, len(result["objectives"]))
    assert torch.equal(lam["2"][:, 1], lam["2"][:, 0]) and not torch.equal(lam["2"][:, 2], lam["2"][:, 1])
    assert len(result["step_s"]["plain"]) == len(result["step_s"]["every-2"]) == 6
    printed = capsys.readouterr().out
    assert "| 1 |" in printed and "| 0.0000 | 0.0000 |" in printed and "| 2 |" in printed
