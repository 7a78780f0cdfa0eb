"""draw_all and write_report end to end on made-up rows: every file, valid PNGs, the findings' numbers."""

import base64
import os
import re
import warnings

import pytest

from measure import figures, fits, report, results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ENVIRONMENT = {"device": "Test GPU", "jax_version": "0.0.test", "jaxlib_version": "0.0.testlib",
               "xla_flags": "--xla_test_flag=1", "host": "testhost", "python": "3.11"}
# Two tiny made-up networks: name, family, params, G-Ops, paper top-1, ms per image at batch 1.
TINY = [("tiny_a", "resnet", 2_000_000, 0.5, 61.0, 1.0), ("tiny_b", "enet", 500_000, 0.2, 55.0, 0.6)]


def make_rows(power=None, networks=TINY, batches=(1, 4, 16)):
    """Rows of the made-up networks (power: None, "nvml" or "modelled") plus one out-of-memory row."""
    rows = []
    for i, (name, family, params, gops, top1, ms) in enumerate(networks):
        counts = dict(model=name, display_name=name.replace("_", "-").title(), family=family, resolution=32,
                      precision="float32", device="Test GPU", params=params, paper_ops_per_image=int(gops * 1e9),
                      flops_per_image=int(gops * 1e9), top1_percent_paper=top1, gops_paper=gops,
                      params_m_paper=params / 1e6)
        for batch in batches:
            t = ms / 1e3 / batch ** 0.5
            watts = {None: None, "nvml": 40.0 + 5 * i + batch / 4, "modelled": 50.0}[power]
            rows.append(results.Row(
                **counts, batch_size=batch, memory_analytical_bytes=4 * params + batch * 1_000_000,
                time_per_image_s=t, time_per_image_p25_s=t * 0.98, time_per_image_p75_s=t * 1.02,
                images_per_s=1 / t, compile_s=0.5, timed_batches=10,
                memory_xla_total_bytes=4 * params + batch * 900_000,
                power_source=power or "not measured", power_w=watts, energy_per_image_j=watts * t if watts else None))
    name, family, params, gops, top1, _ = networks[0]
    rows.append(results.Row(name, name.replace("_", "-").title(), family, 64, 32, "float32", "Test GPU",
                            status=results.OUT_OF_MEMORY, error="RESOURCE_EXHAUSTED", params=params,
                            paper_ops_per_image=int(gops * 1e9), top1_percent_paper=top1, gops_paper=gops,
                            params_m_paper=params / 1e6))
    return rows


def run(rows, out_dir):
    """draw_all then write_report; returns report.md and report.html as text."""
    files = figures.draw_all(rows, str(out_dir))
    assert sorted(files) == sorted(f"{stem}.{ext}" for stem in figures.FIGURES for ext in ("png", "svg"))
    for name in files:
        with open(out_dir / name, "rb") as f:
            data = f.read()
        assert data.startswith(PNG_SIGNATURE if name.endswith(".png") else b"<?xml") and len(data) > 1000, name
    assert report.write_report(rows, ENVIRONMENT, str(out_dir), files) == ["report.md", "report.html"]
    assert not [f for f in os.listdir(out_dir) if f.startswith(".tmp-")], "a temporary file was left behind"
    return (out_dir / "report.md").read_text(encoding="utf-8"), (out_dir / "report.html").read_text(encoding="utf-8")


def check_html_is_self_contained(page):
    """Nine embedded PNGs, each decodable, and nothing fetched or linked from outside."""
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(figures.FIGURES)
    assert all(base64.b64decode(image).startswith(PNG_SIGNATURE) for image in images)
    assert len(re.findall(r"\bsrc=", page)) == len(images)
    for external in ("http://", "https://", "<link", "<script", "href=", "url("):
        assert external not in page


def check_findings_and_fits(md, rows):
    """The four findings are named, with the linear fits' numbers as fitted at batch 1 and 16."""
    for n in (1, 2, 3, 4):
        assert f"Finding {n}:" in md
    for batch in (1, 16):
        points = fits.ok_rows(rows, batch)
        fit = fits.linear_fit([fits.gops_per_image(r) for r in points], [r.time_per_image_s * 1e3 for r in points])
        equation = f"time = {fit.slope:.4g} ms/G-Op × G-Ops + {fit.intercept:.4g} ms, R² = {fit.r2:.3f}"
        assert f"batch {batch}: {equation}" in md
    assert "Only two networks" in md and "Too few networks to judge" in md
    assert "batch 1: not fitted (needs at least 3 points" in md  # the hyperbola, with two networks
    assert "Tiny-A at batch 64: out_of_memory" in md
    assert "Test GPU" in md and "0.0.testlib" in md and "--xla_test_flag=1" in md and "testhost" in md


def test_end_to_end_with_measured_power(tmp_path):
    rows = make_rows(power="nvml")
    md, page = run(rows, tmp_path)
    check_findings_and_fits(md, rows)
    check_html_is_self_contained(page)
    spread = fits.power_spread(rows)
    assert f"spread (max − min) / mean = {spread.range_fraction:.1%}" in md
    assert "| Tiny-A | resnet | 2.00 | 0.50 | 61.00 | 1.000 | 1000.0 |" in md  # the batch-1 table
    bound = fits.energy_bound(rows, fits.energy_budgets(rows)[0])
    assert f"| {bound.budget_j * 1e3:.3g} | 1 of 2: {bound.networks[0]} |" in md
    for stem in figures.FIGURES:
        assert f"({stem}.png)" in md


def test_end_to_end_without_power(tmp_path):
    rows = make_rows(power=None)
    md, page = run(rows, tmp_path)
    check_findings_and_fits(md, rows)
    check_html_is_self_contained(page)
    assert md.count("Here: not measured (") == 2  # findings 1 and 3
    power_texts = [t.get_text() for t in figures.power_vs_batch(rows).axes[0].texts]
    assert any("power not measured on this device" in t for t in power_texts)
    speed_texts = [t.get_text() for t in figures.top1_vs_speed(rows).axes[0].texts]
    assert any("no iso-energy lines" in t for t in speed_texts)


def test_modelled_power_is_labelled_and_not_taken_for_a_measurement(tmp_path):
    rows = make_rows(power="modelled")
    fig = figures.power_vs_batch(rows)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels and all("(modelled)" in label for label in labels)
    assert "modelled" in fig.axes[0].get_title()
    report.write_report(rows, {"peak_flops_per_s": 2.5e11}, str(tmp_path), [])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Not a measurement: power is modelled" in md and "| peak (matmul probe) | 250.0 GFLOP/s |" in md


def test_every_figure_says_no_data_when_nothing_was_measured(tmp_path):
    failed = [r for r in make_rows() if r.status != results.OK]
    for stem, (draw, _) in figures.FIGURES.items():
        texts = [t.get_text() for ax in draw([]).axes for t in ax.texts]
        assert any(t.startswith("no data") for t in texts), stem
    md, page = run(failed, tmp_path)
    assert "not fitted: no network was timed successfully" in md
    assert "data:image/png;base64," in page


def test_a_single_point_draws_without_collapsing_axes():
    # One network at one batch size sits on its own iso-energy line: the log axis must not collapse.
    rows = make_rows(power="modelled", networks=TINY[:1], batches=(1,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for draw, _ in figures.FIGURES.values():
            draw(rows).canvas.draw()


def test_hyperbola_and_disagreements_are_reported(tmp_path):
    # Four networks whose time does not follow operations and whose power varies by far more than 20 %.
    four = TINY + [("tiny_c", "vgg", 9_000_000, 3.0, 70.0, 1.2), ("tiny_d", "inception", 4_000_000, 1.0, 68.0, 9.0)]
    rows = make_rows(power="nvml", networks=four, batches=(1,))
    rows[3].power_w = 200.0
    report.write_report(rows, ENVIRONMENT, str(tmp_path), [])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    ok = fits.ok_rows(rows, 1)
    fit = fits.hyperbola_fit([r.time_per_image_s * 1e3 for r in ok], [r.top1_percent_paper for r in ok])
    assert f"a_max = {fit.a_max:.4g} %, k = {fit.k:.4g} %·ms, t0 = {fit.t0:.4g} ms, R² = {fit.r2:.3f}" in md
    assert "This device disagrees with the paper: power varies by" in md
    assert "This device disagrees with the paper: operations predict time poorly" in md


def test_colours_are_fixed_shades_of_the_family_hue():
    rows = make_rows(networks=[("resnet18", "resnet", 1, 1.0, 70.0, 1.0), ("resnet50", "resnet", 1, 1.0, 76.0, 2.0),
                               ("mystery", "unknown", 1, 1.0, 50.0, 1.0)])
    palette = figures.colours(rows)
    assert palette["resnet18"] != palette["resnet50"]
    assert palette == figures.colours(rows[::-1])  # independent of order and of which others are present
    assert palette["resnet50"] == figures.colours([r for r in rows if r.model == "resnet50"])["resnet50"]
    assert palette["mystery"] == figures.OTHER_COLOUR


@pytest.mark.parametrize("bad", [KeyboardInterrupt, OSError])
def test_an_interrupted_write_leaves_the_old_report(tmp_path, monkeypatch, bad):
    rows = make_rows(power="nvml")
    report.write_report(rows, ENVIRONMENT, str(tmp_path), [])
    before = (tmp_path / "report.md").read_text(encoding="utf-8")

    def interrupted(*args):
        raise bad()

    monkeypatch.setattr(report.os, "replace", interrupted)
    with pytest.raises(bad):
        report.write_report(make_rows(), {}, str(tmp_path), [])
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == before
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
