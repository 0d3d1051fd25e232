"""`kcaps sweep`: grid parsing, figures from a run's log, the Pareto front, resume, bad keys."""
import csv

import pytest

from kcaps_training import cli, datasets, pareto, sweep
from kcaps_training import train as recipe


def test_grid_tokens_parse_to_typed_values():
    grid = sweep.parse_grid(["lr_policy=fixed,warm_adabatch", "weight_sharing=none,type,8",
                             "epochs=3", "learning_rate=1e-3", "decoder=small"])
    assert grid == {"lr_policy": ["fixed", "warm_adabatch"], "weight_sharing": [None, "type", 8],
                    "epochs": [3], "learning_rate": [1e-3], "decoder": ["small"]}


def test_unknown_grid_key_lists_the_valid_keys():
    with pytest.raises(ValueError, match="unknown sweep grid key 'policy_x'; valid keys: "
                                         "lr_policy, batch_policy, weight_sharing"):
        sweep.parse_grid(["policy_x=fixed"])
    with pytest.raises(ValueError, match="valid keys"):
        sweep.expand([{"lr": [1]}])
    with pytest.raises(ValueError, match="KEY=V1,V2"):
        sweep.parse_grid(["epochs"])


def test_grids_expand_to_the_union_of_their_products():
    points = sweep.expand([{"lr_policy": ["fixed", "exp_decay"], "epochs": [1, 2]},
                           {"lr_policy": ["fixed"], "epochs": [1]},
                           {"lr_policy": ["warm_adabatch"], "batch_policy": ["adabatch"]}])
    assert points == [{"lr_policy": "fixed", "epochs": 1}, {"lr_policy": "fixed", "epochs": 2},
                      {"lr_policy": "exp_decay", "epochs": 1},
                      {"lr_policy": "exp_decay", "epochs": 2},
                      {"lr_policy": "warm_adabatch", "batch_policy": "adabatch"}]
    assert sweep.point_name(points[-1]) == "lr_policy=warm_adabatch,batch_policy=adabatch"


def test_summary_uses_fastrcaps_training_time():
    log = [{"epoch": str(e), "epoch_seconds": str(s), "epoch_cpu_seconds": str(2 * s),
            "val_accuracy": str(a)} for e, s, a in
           [(0, 10.0, 0.90), (1, 2.0, 0.95), (2, 3.0, 0.97), (3, 5.0, 0.96)]]
    log.append({"epoch": "3", "epoch_seconds": "5.0", "epoch_cpu_seconds": "10.0",
                "val_accuracy": "0.96"})  # an epoch repeated by a resumed run
    figures = sweep.summarize(log)
    assert figures["best_accuracy"] == 0.97 and figures["best_epoch"] == 3
    assert figures["mean_epoch_seconds"] == pytest.approx(5.0)
    assert figures["fastrcaps_seconds"] == pytest.approx(15.0)  # 3 epochs x 5 s mean
    assert figures["seconds_to_best"] == pytest.approx(15.0)
    assert figures["total_seconds"] == pytest.approx(20.0)
    assert figures["final_accuracy"] == 0.96 and figures["epochs_run"] == 4
    assert figures["fastrcaps_cpu_seconds"] == pytest.approx(30.0)
    assert figures["total_cpu_seconds"] == pytest.approx(40.0)


def test_pareto_front_keeps_only_undominated_points():
    points = [{"t": 10, "a": 0.90}, {"t": 5, "a": 0.95}, {"t": 20, "a": 0.99},
              {"t": 20, "a": 0.98}, {"t": 5, "a": 0.93}, {"t": 30, "a": 0.99}]
    front = pareto.pareto_front(points, "t", "a")
    assert front == [{"t": 5, "a": 0.95}, {"t": 20, "a": 0.99}]


@pytest.mark.slow
def test_sweep_trains_each_point_once_and_resumes(tmp_path, monkeypatch, capsys):
    full = datasets.load("digits")
    data = datasets.Dataset("digits", full.x_train[:32], full.y_train[:32], full.x_test[:16],
                            full.y_test[:16], 10)
    base = recipe.TrainConfig(epochs=2, batch_size=16, verbose=0)
    grids = [{"lr_policy": ["fixed"], "routing_iterations": [1, 2]},
             {"lr_policy": ["warm_adabatch"], "batch_policy": ["adabatch"], "warm_epochs": [1],
              "warm_batch_size": [8]}]
    trained = []
    real_train = recipe.train

    def counting_train(config, **kwargs):
        trained.append(config.output_dir)
        if len(trained) == 2:
            raise KeyboardInterrupt  # the sweep stops after its first point
        return real_train(config, **kwargs)

    monkeypatch.setattr(recipe, "train", counting_train)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(base, grids, str(tmp_path), data=data)
    with open(tmp_path / "sweep.csv") as f:
        assert [r["point"] for r in csv.DictReader(f)] == ["lr_policy=fixed,routing_iterations=1"]

    trained.clear()
    monkeypatch.setattr(recipe, "train", real_train)
    rows = sweep.run_sweep(base, grids, str(tmp_path), data=data)
    assert len(rows) == 3 and (tmp_path / "pareto.png").stat().st_size > 0
    adabatch = rows[2]
    assert adabatch["epochs_run"] == 2 and 0 <= adabatch["best_accuracy"] <= 1
    assert adabatch["fastrcaps_seconds"] == pytest.approx(
        adabatch["best_epoch"] * adabatch["mean_epoch_seconds"])
    log = (tmp_path / "points" / rows[2]["point"] / "log.csv").read_text()
    assert "batch_size" in log.splitlines()[0]

    def must_not_train(config, **kwargs):
        raise AssertionError(f"trained {config.output_dir} again")

    monkeypatch.setattr(recipe, "train", must_not_train)
    assert sweep.run_sweep(base, grids, str(tmp_path), data=data) == rows
    with pytest.raises(ValueError, match="other shared settings"):
        sweep.run_sweep(recipe.TrainConfig(epochs=3, verbose=0), grids, str(tmp_path), data=data)
    sweep.print_rows(rows, "fastrcaps_seconds", "best_accuracy")
    assert "Pareto set" in capsys.readouterr().out


def test_cli_rejects_a_bad_grid_before_training(tmp_path, capsys):
    assert cli.main(["sweep", "--output", str(tmp_path), "--grid", "speed=fast"]) == 2
    assert "valid keys: lr_policy" in capsys.readouterr().err
    assert cli.main(["sweep", "--output", str(tmp_path), "--grid", "warm_batch_size=0"]) == 2
    assert "`warm_batch_size` must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "points").exists()


def test_train_cli_accepts_the_fast_training_flags():
    args = cli.build_parser().parse_args(
        ["train", "--lr-policy", "warm_adabatch", "--batch-policy", "adabatch",
         "--weight-sharing", "32", "--sharing-order", "type_major", "--decoder", "small",
         "--squash", "approx", "--model", "capsnet"])
    config = cli.config_from_args(args, "runs/x")
    assert (config.lr_policy, config.batch_policy, config.weight_sharing, config.decoder,
            config.squash) == ("warm_adabatch", "adabatch", 32, "small", "approx")
    default = cli.config_from_args(cli.build_parser().parse_args(["train"]), "runs/x")
    assert default == recipe.TrainConfig(output_dir="runs/x", verbose=default.verbose)
