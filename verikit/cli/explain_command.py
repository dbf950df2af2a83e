"""`verikit explain MODEL --input X.npy`: interpretation maps (CAM, GradCAM++, Integrated Gradients) of
an ONNX model's decision on one input, written as PNG pictures and raw .npy arrays."""
from __future__ import annotations

import json
from math import prod

import click

from verikit.cli.common import handles_errors, threads_option, use_threads


@click.command(short_help="Interpretation maps (CAM, GradCAM++, IG) of one input, as PNG and .npy.")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help="The input as a numeric .npy array (any shape with the model's number of entries).")
@click.option("--label", "labels", multiple=True, type=int,
              help="A class to explain; repeat for several (default: the predicted class).")
@click.option("--method", type=click.Choice(["cam", "gradcam++", "ig"]), default="cam", show_default=True,
              help="cam needs global average pooling and a bias-free linear head; gradcam++ a convolution; "
                   "ig works on any model.")
@click.option("--steps", default=64, show_default=True, type=click.IntRange(min=1),
              help="ig: Riemann steps from the zero baseline to the input.")
@click.option("--out", required=True, type=click.Path(), help="Output folder (created if missing).")
@click.option("--force", is_flag=True, help="Replace files an earlier run wrote there.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@threads_option
@handles_errors
def explain(model, input_path, labels, method, steps, out, force, as_json) -> None:
    """Explain MODEL's logits on one input: OUT/image.png, and for each class METHOD_classL.npy (the
    raw map: CAM and GradCAM++ at the last feature map's resolution, IG per pixel summed over channels),
    METHOD_classL.png (blue negative, red positive) and METHOD_classL_overlay.png (over the input).

    \b
    Examples:
      verikit explain gap.onnx --input x.npy --out maps
      verikit explain gap.onnx --input x.npy --label 3 --label 5 --method gradcam++ --out maps
      verikit explain net.onnx --input x.npy --method ig --steps 128 --out maps
    """
    from verikit.cli.bound_commands import read_input
    from verikit.interpret.files import write_explanation
    from verikit.interpret.network import load_network

    use_threads()
    network = load_network(model)
    x = read_input(input_path, prod(network.input_shape), [1, *network.input_shape])
    results = write_explanation(network, x, list(labels), method, out, steps, force)
    if as_json:
        click.echo(json.dumps([{"label": r.label, "logit": r.logit, "shape": list(r.shape), "array": str(r.array),
                                "picture": str(r.picture), "overlay": str(r.overlay)} for r in results], indent=2))
        return
    for r in results:
        click.echo(f"class {r.label} (logit {r.logit:.4g}): {method} map {'x'.join(map(str, r.shape))} in "
                   f"{r.array.name}, {r.picture.name}, {r.overlay.name}")
    click.echo(f"wrote {len(results) * 3 + 1} files in {out}")
