"""``pipeline audit`` (an HTML report on one label set) and ``pipeline labels diff`` (two label sets compared)."""

from __future__ import annotations

import click

from data_schema import Dataset, DatasetError
from data_schema.storage import atomic_write_bytes, filesystem
from pipeline.audit.compare import compare
from pipeline.audit.config import ReportConfig
from pipeline.audit.html import page, section
from pipeline.audit.report import write_report
from pipeline.audit.show import figure_png

#: Errors that carry a message for the user; anything else is a bug and keeps its traceback.
USER_ERRORS = (DatasetError, ValueError, KeyError, FileNotFoundError)


@click.command("audit")
@click.argument("dataset")
@click.option("--label-set", "label_set", required=True, help="Label set to audit (labels/NAME/ in the dataset).")
@click.option("--out", required=True, help="Where to write the HTML report (path or fsspec URL); one file, images embedded.")
@click.option("--max-frames", type=click.IntRange(min=1), default=ReportConfig.max_frames, show_default=True,
              help="Frames read at most: larger datasets are sampled as whole episodes from randomly chosen shards, "
                   "and the report says what it read.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the shard and episode sampling order.")
@click.option("--worst", type=click.IntRange(min=0), default=ReportConfig.worst, show_default=True,
              help="Lowest-scored frames shown as images.")
@click.option("--timelines", type=click.IntRange(min=0), default=ReportConfig.timelines, show_default=True,
              help="Episode timelines drawn (collision, off-road and stuck endings first).")
@click.option("--corridor-length", type=float, default=None,
              help="Ground truth for gate recall: metres ahead in which a pedestrian/cyclist/motorcycle should fire "
                   "the gate. Default: the corridor in the label set's gate settings.")
@click.option("--corridor-half-width", type=float, default=None,
              help="Ground truth for gate recall: metres either side of the ego's centre line. Default: the label "
                   "set's gate settings.")
@click.option("--skip-bad", is_flag=True,
              help="Leave shards that cannot be read (corrupt, non-finite values, undecodable frames) out of the report, "
                   "listing them, instead of stopping.")
def audit(
    dataset: str, label_set: str, out: str, max_frames: int, seed: int, worst: int, timelines: int,
    corridor_length: float | None, corridor_half_width: float | None, skip_bad: bool,
) -> None:  # fmt: skip
    """Write a self-contained HTML report auditing one label set of DATASET.

    The report holds provenance (dataset.json, label_set.json), score histograms, gate share and recall
    against the simulator's ground truth, VLM answer validity, rewards per event type, the lowest-scored
    frames as images and a few episode timelines. It needs nothing but a browser to open.
    """
    try:
        config = ReportConfig(max_frames, seed, worst, timelines, corridor_length, corridor_half_width)
        summary = write_report(Dataset.open(dataset, skip_bad), label_set, out, config)
    except USER_ERRORS as e:
        raise click.ClickException(_message(e)) from None
    click.echo(
        f"wrote {out}\n"
        f"frames {summary['frames']:,} of {summary['labelled_frames']:,} labelled ({summary['shards_read']} shard(s) read)\n"
        f"gate share {_rate(summary['gate_share'])}, recall {_rate(summary['recall'])}, precision {_rate(summary['precision'])}\n"
        f"VLM answers valid {summary['vlm_valid']}, invalid {summary['vlm_invalid']}, missing {summary['vlm_missing']}\n"
        "reward validity, AUROC of the semantic score against ground-truth hazards: "
        + ", ".join(f"{kind} {_rate(value)}" for kind, value in summary["auroc"].items())
    )
    for note in summary["findings"]:
        click.echo(f"finding: {note}")
    for shard, why in summary["bad_shards"].items():
        click.echo(f"skipped unreadable shard {shard}: {why}")


@click.group("labels")
def labels() -> None:
    """Inspect the label sets of a dataset."""


@labels.command("diff")
@click.argument("dataset")
@click.argument("a")
@click.argument("b")
@click.option("--top", type=click.IntRange(min=1), default=12, show_default=True,
              help="Frames with the largest reward change listed (and drawn with --png/--html).")
@click.option("--columns", default=None,
              help="Comma-separated label columns to compare (default: all of them).")
@click.option("--atol", type=float, default=1e-6, show_default=True,
              help="A numeric value counts as changed when it moves by more than this.")
@click.option("--image", type=click.Choice(["bev", "camera"]), default="bev", show_default=True,
              help="Frame image drawn for the most changed frames in --png/--html.")
@click.option("--html", "html_out", default=None, help="Also write the comparison as a self-contained HTML file.")
@click.option("--png", "png_out", default=None, help="Also write the most changed frames as a PNG grid.")
def diff(dataset: str, a: str, b: str, top: int, columns: str | None, atol: float, image: str, html_out: str | None, png_out: str | None) -> None:
    """Compare label sets A and B of DATASET frame by frame.

    Prints, per label column, the share of frames that changed and the mean / mean absolute change, the
    correlation of the rewards, and the frames whose reward changed most.
    """
    try:
        ds = Dataset.open(dataset)
        chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        result = compare(ds, a, b, columns=chosen, top=top, atol=atol)
        click.echo(result.text())
        if png_out:
            fs, path = filesystem(png_out)
            atomic_write_bytes(fs, path, figure_png(result.show(ds, image=image, n=top)))
            click.echo(f"wrote {png_out}")
        if html_out:
            body = section(f"{a} vs {b}", result.to_html(ds, image=image, n=top))
            fs, path = filesystem(html_out)
            atomic_write_bytes(fs, path, page(f"Label sets {a} vs {b}", ds.url, [body]).encode("utf-8"))
            click.echo(f"wrote {html_out}")
    except USER_ERRORS as e:
        raise click.ClickException(_message(e)) from None


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _message(error: Exception) -> str:
    # str(KeyError) quotes its message; the user should read it plainly
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
