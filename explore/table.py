"""A sweep as one queryable table: a record per variant, units in the column names (variants.csv).

`load(out_dir)` reads a sweep directory (partial sweeps too) into records; `best(records, column,
**bounds)` answers "the most accurate variant under 20 ms at batch 1" in one call:

    best(load("results/explore"), "top1_pct", latency_ms_b1=(None, 20))

Columns (None where not measured; B is each batch size timed, S each seed trained):
- variant, spaces, network: the canonical variant string, the spaces it was drawn from, its network;
- width, depths, resolution, channels: the configuration it realises (channels after rounding);
- gflops, gmacs, params, activations: its counted costs per image at batch 1;
- predicted_latency_ms_b1 (with _low_ and _high_ ends of its interval), predicted_energy_mj_b1: a
  predictor's figures at batch 1 (measure.predict), where the sweep was planned with one; never
  mixed with the measured columns;
- latency_ms_bB, latency_p25_ms_bB, latency_p75_ms_bB: median and quartiles of the time per image;
- images_per_s_bB, energy_mj_bB, power_w_bB: throughput, energy per image and power at batch B;
- power_source: where power came from (a meter's name, "modelled" or "not measured");
- top1_pct, top1_pct_seedS, seeds: top-1 on the data set's evaluation split, mean and per seed;
- dataset, budget, device: what the accuracies and times were measured on, and how long it trained;
- failures: what did not finish, in words.
"""

from typing import Optional

from explore import analyse as analyse_lib
from explore import sample
from measure import findings, results


def records(analysis: analyse_lib.Analysis, run_summary: dict) -> list[dict]:
    """One flat record per variant of an analysis (see the module's columns)."""
    out = []
    for v in analysis.variants:
        record = {"variant": v.variant, "spaces": " ".join(v.spaces), "network": v.variant.partition(":")[0],
                  **{knob: _plain(v.config.get(knob)) for knob in ("width", "depths", "resolution", "channels")},
                  "gflops": v.costs["flops"] / 1e9, "gmacs": v.costs["macs"] / 1e9, "params": v.costs["params"],
                  "activations": v.costs["activations"],
                  **{key: v.costs[key] for key in sample.PREDICTED_COSTS if key in v.costs}}
        for batch, row in sorted(v.rows.items()):
            ok = row.status == results.OK
            energy = findings.energy_per_image_j(row) if ok else None
            record.update({f"latency_ms_b{batch}": row.time_per_image_s * 1e3 if ok else None,
                           f"latency_p25_ms_b{batch}": _ms(row.time_per_image_p25_s) if ok else None,
                           f"latency_p75_ms_b{batch}": _ms(row.time_per_image_p75_s) if ok else None,
                           f"images_per_s_b{batch}": row.images_per_s if ok else None,
                           f"energy_mj_b{batch}": None if energy is None else energy * 1e3,
                           f"power_w_b{batch}": row.power_w if ok else None})
        sources = {row.power_source for row in v.rows.values() if row.status == results.OK}
        record.update({"power_source": " ".join(sorted(sources)) or None, "top1_pct": v.accuracy,
                       **{f"top1_pct_seed{seed}": top1 for seed, top1 in zip(run_summary.get("seeds", []), v.top1)},
                       "seeds": len(v.top1), "dataset": run_summary.get("dataset"),
                       "budget": run_summary.get("budget"), "device": analysis.device,
                       "failures": "; ".join(v.failures)})
        out.append(record)
    return out


def _ms(seconds: Optional[float]) -> Optional[float]:
    """Seconds in milliseconds, None kept."""
    return None if seconds is None else seconds * 1e3


def _plain(value):
    """A configuration value as one CSV cell: sequences joined by '-', as variant strings write them."""
    return "-".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value


def load(out_dir: str) -> list[dict]:
    """The table of a sweep directory, from its plan and whatever results it holds."""
    from explore import run as run_lib  # pylint: disable=import-outside-toplevel  # run.py writes this table

    _, variants = analyse_lib.load(out_dir)
    return records(analyse_lib.analyse(variants), run_lib.run_summary(out_dir))


def best(table: list[dict], column: str, **bounds: tuple[Optional[float], Optional[float]]) -> Optional[dict]:
    """The record with the largest `column` among those whose bounded columns lie in [low, high] (None: open).

    A record without a value in `column` or in a bounded column is left out; None when none is left.
    """
    def within(record: dict) -> bool:
        """Whether every bounded column has a value inside its bounds."""
        return all(record.get(name) is not None and (low is None or record[name] >= low)
                   and (high is None or record[name] <= high) for name, (low, high) in bounds.items())

    candidates = [r for r in table if r.get(column) is not None and within(r)]
    return max(candidates, key=lambda r: r[column], default=None)
