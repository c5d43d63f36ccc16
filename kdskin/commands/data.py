"""``kdskin data synth | split | inspect``."""

from __future__ import annotations

from typing import Any

from kdskin.config import Config
from kdskin.errors import DataError, KdskinError


def synth_command(cfg: Config, out: str | None, n_images: int | None = None,
                  seed: int | None = None, overwrite: bool = False) -> Any:
    """Write the built-in generated dataset (HAM10000 layout) to ``out``."""
    from kdskin.data.synth import generate_dataset

    if not out:
        raise KdskinError("kdskin data synth needs --out DIR (the folder to write the dataset to)")
    s = cfg.data.synth
    table = generate_dataset(out, n_images=n_images or s.n_images,
                             max_images_per_lesion=s.max_images_per_lesion,
                             image_size=s.image_size, seed=s.seed if seed is None else seed,
                             overwrite=overwrite, progress=True)
    print(f"wrote {len(table):,} images of {table['lesion_id'].nunique():,} lesions to "
          f"{out} (HAM10000 layout)")
    return table


def split_command(cfg: Config, data: str, out: str, fmt: str | None = None,
                  strict: bool | None = None, protocol: str | None = None,
                  seed: int | None = None) -> Any:
    """Write a train/val/test split CSV of ``data`` and print its summary."""
    from kdskin.data.datasets import read_dataset
    from kdskin.data.inspect import format_summary, summarize
    from kdskin.data.split import lesions_in_several_splits, make_split, protocol_label, write_split

    dataset = read_dataset(data, fmt or cfg.data.format,
                           strict=cfg.data.strict if strict is None else strict)
    protocol = protocol or cfg.data.protocol
    split = make_split(dataset.table, protocol, cfg.data.split,
                       cfg.data.seed if seed is None else seed, cfg.data.paper_per_class)
    write_split(split, out)
    print(format_summary(summarize(dataset, split)))
    shared = lesions_in_several_splits(split)
    print(f"protocol: {protocol_label(protocol)}")
    print(f"wrote {out}: {len(split):,} rows; lesions in several splits: {len(shared)}")
    return split


def inspect_command(cfg: Config, data: str, fmt: str | None = None, strict: bool | None = None,
                    split: str | None = None, verify: bool = False,
                    json_out: str | None = None) -> dict[str, Any]:
    """Print counts per class and split, missing images, repeated lesions and sizes.

    ``strict`` (else ``data.strict``): a metadata row without an image and an unreadable image
    are errors (:class:`DataError`, raised after the summary is printed and written).
    """
    from kdskin.data.datasets import read_dataset
    from kdskin.data.inspect import format_summary, summarize
    from kdskin.data.split import read_split

    strict = cfg.data.strict if strict is None else strict
    dataset = read_dataset(data, fmt or cfg.data.format, strict=strict)
    summary = summarize(dataset, read_split(split) if split else None, verify=verify)
    print(format_summary(summary))
    if json_out:
        from kdskin.io import write_json

        write_json(json_out, summary)
    unreadable = summary["unreadable_images"]
    if strict and unreadable:
        raise DataError(f"{data}: {len(unreadable)} of {summary['images']} "
                        f"images cannot be read (first: {unreadable[0]}); replace or remove "
                        f"them, or drop --strict to skip them")
    return summary
