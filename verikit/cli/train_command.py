"""`verikit train TRAINER`: train a network with a trainer plugin on an offline dataset, export it to
ONNX (checked against verikit and onnxruntime before it is written) and log every epoch to a CSV."""
from __future__ import annotations

import click

from verikit.cli.common import handles_errors


@click.command(short_help="Train a network with a trainer plugin and export it to ONNX.")
@click.argument("trainer")
@click.option("--data", help="Dataset: digits (default), digits:size=16, mnist5k, teacher, or a .npz path.")
@click.option("--arch", help="Architecture: mlp, mnist-small, mnist-medium, mnist-resnet, cnn-4layer-5-3, "
              "small-gap, ntk-conv:width=W (default: the trainer's own; mnist-small for most, small-gap for "
              "interpret, ntk-conv for the Align trainers).")
@click.option("--eps", type=float, help="Target eps in the [0, 1] input scale (default 0.1).")
@click.option("--epochs", type=int, help="Epochs (default 100, as the reference).")
@click.option("--batch-size", type=int, help="Batch size (default 100).")
@click.option("--lr", type=float, help="Adam's initial learning rate (default: the trainer's).")
@click.option("--seed", type=int, help="Seeds the split, the initial weights and the batch order (default 0).")
@click.option("--out", type=click.Path(dir_okay=False), help="The ONNX file to write (default model.onnx).")
@click.option("--config", type=click.Path(dir_okay=False), help="A YAML file of options (any option above, and "
              "the trainer's own: kappa_end, relu_rule, adaptive, steps, warmup, ramp_end, lr_drops, ...).")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint beside --out (OUT.ckpt).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@handles_errors
def train(trainer, data, arch, eps, epochs, batch_size, lr, seed, out, config, force, resume, quiet) -> None:
    """Train TRAINER (standard, pgd-at, ibp, crown-ibp, singleprop, or a plugin's) and export the network.

    \b
    Examples:
      verikit train standard --data digits --epochs 1 --out m.onnx
      verikit train singleprop --data digits:size=16 --eps 0.1 --epochs 20 --out sp.onnx
      verikit train crown-ibp --config run.yaml --resume
    """
    from verikit.cli.common import console
    from verikit.trainers.run import TrainRun

    values = read_values(config, dict(data=data, arch=arch, out=out, epochs=epochs, batch_size=batch_size,
                                      lr=lr, seed=seed, eps=eps))
    run = TrainRun.prepare(trainer, values, force=force, resume=resume)
    result = run.execute(show_progress=not quiet)
    console(stderr=False).print(f"test accuracy {result.test_accuracy:.4f}  ({len(run.data.y_test)} test inputs)")
    click.echo(f"wrote {result.path} (log {result.log})")


def read_values(config: str | None, given: dict) -> dict:
    """The config's values, overridden by the options given on the command line."""
    from verikit.trainers.config import read_config

    values = read_config(config) if config else {}
    values.update({key: value for key, value in given.items() if value is not None})
    return values
