"""The reports of `face-agent eval` and `tune` (agent.evaluation) as text tables and a PNG plot; the last
of each kept in `[evaluation] reports` (`save_last`, read back by `last_reports`: the web console)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import Config
from agent.evaluation import EvalError
from agent.files import atomic_write
from agent.logsafe import shown

log = logging.getLogger(__name__)

REPORT_KINDS = ("tune", "eval")  # <kind>.txt (what the command printed), <kind>.json, <kind>.png (the plot),
# <kind>-phone.png (the same plot, its two panels one above the other: the web console on a phone)


def reports_folder(cfg: Config) -> Path | None:
    """`[evaluation] reports` under `[paths] storage` (or absolute); None when keeping reports is off."""
    value = cfg.evaluation.reports
    return cfg.path("storage") / Path(value).expanduser() if value else None


def save_last(cfg: Config, kind: str, text: str, data: dict, plotted: dict | None) -> Path | None:
    """Keep this `kind` (eval or tune) report as the last one: the text, the JSON and (`plotted`: the
    recognition report, when matplotlib is installed) the plot; an older plot goes with a new report without
    one. A folder that cannot be written is logged, not fatal (the report was printed). Returns the folder."""
    folder = reports_folder(cfg)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for png, portrait in ((folder / f"{kind}.png", False), (folder / f"{kind}-phone.png", True)):
            if plotted is None:
                png.unlink(missing_ok=True)
                continue
            tmp = folder / f".{png.stem}-{os.getpid()}.png"  # a hidden name: never served half-written
            try:
                plot_report(plotted, tmp, portrait)
                os.replace(tmp, png)
            except EvalError as exc:  # no matplotlib: the text is kept all the same
                log.info("the %s plot is not kept: %s", kind, exc)
                png.unlink(missing_ok=True)
            finally:
                tmp.unlink(missing_ok=True)
        atomic_write(folder / f"{kind}.json", json.dumps({"saved_at": time.time(), **data},
                                                         ensure_ascii=False).encode())
        atomic_write(folder / f"{kind}.txt", text.encode())
    except OSError as exc:
        log.warning("cannot keep the last %s report in %s: %s", kind, folder, exc)
        return None
    return folder


FORGOTTEN = "(forgotten)"


def redact_reports(cfg: Config, person: str) -> int:
    """Take `person`'s name out of the kept reports (`forget`): in the text and the JSON every mention of
    the name (as a whole word; a JSON key or value) becomes "(forgotten)", the figures stay. The plot holds
    no names. Returns how many files changed."""
    folder = reports_folder(cfg)
    if folder is None or not folder.is_dir():
        return 0
    word = re.compile(rf"(?<![\w]){re.escape(person)}(?![\w])")

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return word.sub(FORGOTTEN, value)
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        return value

    changed = 0
    for kind in REPORT_KINDS:
        for path, redact in ((folder / f"{kind}.txt", lambda text: word.sub(FORGOTTEN, text)),
                             (folder / f"{kind}.json", lambda text: json.dumps(clean(json.loads(text)),
                                                                               ensure_ascii=False))):
            try:
                text = path.read_text(encoding="utf-8")
                if not word.search(text):
                    continue
                atomic_write(path, redact(text).encode())
                changed += 1
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:  # unreadable: it goes, names and all
                log.warning("%s: cannot redact (%s): deleted", path, exc)
                path.unlink(missing_ok=True)
                changed += 1
    return changed


def last_reports(cfg: Config) -> list[dict]:
    """The kept reports, tune first: kind, when (epoch seconds), text, plot (file name or None)."""
    folder = reports_folder(cfg)
    out = []
    for kind in REPORT_KINDS if folder is not None else ():
        text_file = folder / f"{kind}.txt"
        try:
            text = text_file.read_text(encoding="utf-8", errors="replace")
            when = text_file.stat().st_mtime
        except OSError:
            continue
        plot, phone = folder / f"{kind}.png", folder / f"{kind}-phone.png"
        out.append({"kind": kind, "when": when, "text": text, "plot": plot.name if plot.is_file() else None,
                    "phone_plot": phone.name if phone.is_file() else None})
    return out


def _pct(v: float | None) -> str:
    return "   n/a" if v is None else f"{100 * v:5.1f}%"


def _dist_lines(d: dict, genuine_label: str, impostor_label: str) -> list[str]:
    lines = ["effective distances (what [recognition] distance_threshold gates; lower = more alike)"]
    for key, label in (("genuine", genuine_label), ("impostor", impostor_label)):
        s = d[key]
        lines.append(f"  {key:9s} n={s['n']:<5d}" + (
            f" min {s['min']:.3f}  median {s['median']:.3f}  max {s['max']:.3f}" if s["n"] else "") + f"   {label}")
    if d["eer"]:
        lines.append(f"  equal error rate {_pct(d['eer']['rate']).strip()} at threshold {d['eer']['threshold']:.3f}")
    c = d["chosen"]
    if c:
        basis = "" if c["basis"] == "target_far" else ", capped at the equal-error point: too few impostors"
        lines.append(f"  threshold for false accepts <= {c['target_far']:.1%}: {c['threshold']:.3f} "
                     f"({c['impostors_accepted']}/{c['impostors']} impostor distances pass{basis})")
    return lines


def format_eval(report: dict) -> str:
    s, cs, d = report["settings"], report["closed_set"], report["distances"]
    ph = report["photos"]
    lines = [f"face-agent eval {report['dir']}: {len(report['people'])} people, {ph['usable']} usable photos "
             f"of {ph['files']} files; {s['repeats']} split(s) from seed {s['seed']}, {s['enroll_k']} enrollment "
             f"photos per person, {s['strangers']} stranger(s)",
             f"queries: {report['queries']['enrolled']} of enrolled people, {report['queries']['strangers']} of "
             "strangers (pooled over splits)", "",
             "closed-set identification (queries of enrolled people)",
             f"  nearest enrolled photo  {cs['nearest_correct']}/{cs['queries']}  {_pct(cs['accuracy'])}",
             f"  SVM vote                {cs['svm_correct']}/{cs['svm_queries']}  {_pct(cs['svm_accuracy'])}"]
    spread = cs.get("spread") or {}
    for key, label in (("accuracy", "accuracy"), ("eer_rate", "equal error rate"),
                       ("eer_threshold", "equal-error threshold"), ("chosen_threshold", "chosen threshold")):
        if spread.get(key):
            v = spread[key]
            lines.append(f"  per split: {label:22s} mean {v['mean']:.3f}  std {v['std']:.3f}  "
                         f"range {v['min']:.3f}..{v['max']:.3f}")
    lines.append("")
    lines += _dist_lines(d, "query to its own person",
                         "query to the nearest other person, as if its own were not enrolled")
    if report.get("open_set_eer"):
        e = report["open_set_eer"]
        lines.append(f"  open-set equal error (1-TAR = 1-TRR) {_pct(e['rate']).strip()} at {e['threshold']:.3f}")
    lines += ["", "open set with the real classifier (distance gate + SVM)",
              "  threshold             TAR    TRR   false accepts   FAR*   FRR*"]
    rows = {round(t, 3): "" for t in np.arange(0.20, 0.3601, 0.02)}
    for label, p in d["at"].items():
        key = round(p["threshold"], 3)
        rows[key] = f"{rows.get(key, '')}({label})"
    for t in sorted(rows):
        p = _row(report, t)
        lines.append(f"  {t:5.3f} {rows[t]:13s}{_pct(p['tar'])} {_pct(p['trr'])}   {p['fa']:>13}  "
                     f"{_pct(p['far'])} {_pct(p['frr'])}")
    lines.append("  TAR: enrolled people named right; TRR: strangers called unknown; false accepts: stranger "
                 "named or wrong name; *distance gate alone")
    if ph["failures"] or ph["duplicates"] or ph["conflicts"]:
        lines += ["", "photos not used"]
        for r in ph["failures"] + ph["duplicates"] + ph["conflicts"]:
            lines.append(shown(f"  {r['status']:14s} {r['person']}/{Path(r['path']).name}"
                               + (f": {r['reason']}" if r["reason"] else "")))
    lines += _warning_lines(report["warnings"])
    return "\n".join(lines)


def _row(report: dict, t: float) -> dict:
    for p in report["distances"]["at"].values():
        if math.isclose(p["threshold"], t):
            return {"tar": p["tar"], "trr": p["trr"], "fa": str(p["false_accepts"]), "far": p["far"],
                    "frr": p["frr"]}
    c = report["distances"]["curves"]
    g = int(np.argmin(np.abs(np.asarray(c["thresholds"]) - t)))
    return {"tar": c["tar"][g] if c["tar"] else None, "trr": c["trr"][g] if c["trr"] else None,
            "fa": str(c["false_accepts"][g]), "far": c["far"][g], "frr": c["frr"][g]}


def format_tune(report: dict) -> str:
    d, cs = report["distances"], report["closed_set"]
    n = sum(report["people"].values())
    lines = [f"face-agent tune: {len(report['people'])} enrolled people, {n} photos, each photo against all the "
             "others (leave-one-out)",
             f"nearest other photo is the same person: {cs['nearest_correct']}/{cs['queries']} {_pct(cs['accuracy'])}",
             ""]
    lines += _dist_lines(d, "photo to its own person's other photos",
                         "photo to the nearest other person, as if its own were not enrolled")
    for label, p in d["at"].items():
        lines.append(f"  at {label} threshold {p['threshold']:.3f}: FAR {_pct(p['far']).strip()}, "
                     f"FRR {_pct(p['frr']).strip()}")
    lines.append("")
    if report["suggested_threshold"] is not None:
        e = d["eer"]
        lines += ["suggested setting for agent.toml:", "[recognition]",
                  f"distance_threshold = {report['suggested_threshold']:.3f}  # face-agent tune: false accepts <= "
                  f"{report['settings']['target_far']:.1%} on {n} photos"
                  + (f", EER {e['rate']:.1%} at {e['threshold']:.3f}" if e else "")]
        if any("mislabelled" in w for w in report["warnings"]):
            lines.append("(fix or remove the suspect photos in the warnings first: they pull the suggestion down)")
    else:
        lines.append("no threshold suggested: enroll at least two people")
    lines += _warning_lines(report["warnings"])
    return "\n".join(lines)


def format_detections(report: dict) -> str:
    lines = [f"face-agent eval --detections {report['xml']}: {report['images']} images, {report['faces']} faces",
             f"  precision {_pct(report['precision'])}  ({report['true_positives']} true / "
             f"{report['false_positives']} false detections)",
             f"  recall    {_pct(report['recall'])}  ({report['true_positives']} of {report['faces']} faces found, "
             f"IoU >= {report['min_iou']:g}; mean IoU {report['mean_iou']})"]
    if report["ignored"]:
        lines.append(f"  {report['ignored']} detections on ignore boxes not counted")
    for p in report["per_image"]:
        name = shown(Path(p["file"]).name)
        for fp in p["false_positives"]:
            lines.append(f"  false positive  {name} box {fp['box']} score {fp['score']:.3f}")
        for box in p["missed"]:
            lines.append(f"  missed          {name} box {box}")
    for e in report["errors"]:
        lines.append(f"  error           {shown(e['error'])}")
    return "\n".join(lines)


def _warning_lines(warnings: list[str]) -> list[str]:
    return (["", "warnings"] + [f"  - {w}" for w in warnings]) if warnings else []


def plot_report(report: dict, path: Path, portrait: bool = False) -> None:
    """Genuine vs impostor histograms and the rates vs threshold, configured and chosen thresholds marked;
    side by side, or one above the other (`portrait`: the web console's plot for a phone's screen).

    Needs matplotlib (`pip install face-agent[eval]`), imported here only: the agent never loads it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise EvalError("--plot needs matplotlib: pip install 'face-agent[eval]'") from None
    d = report["distances"]
    genuine = [x for x in (q.get("genuine") for q in _items(report)) if x is not None]
    impostor = [x for x in (q.get("impostor") for q in _items(report)) if x is not None]
    fig = Figure(figsize=(6.4, 10.5) if portrait else (13, 6.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    hist, curve = fig.subplots(2, 1) if portrait else fig.subplots(1, 2)
    bins = np.linspace(min([0.0, *genuine, *impostor]) - 0.02, max([0.5, *genuine, *impostor]) + 0.02, 52)
    if genuine:
        hist.hist(genuine, bins=bins, alpha=0.6, color="tab:green", label=f"genuine (same person), n={len(genuine)}")
    if impostor:
        hist.hist(impostor, bins=bins, alpha=0.6, color="tab:red",
                  label=f"impostor (nearest other person), n={len(impostor)}")
    hist.set(xlabel="effective distance (docs/evaluation.md)",
             ylabel="photos" if report["command"] == "tune" else "queries",
             title="Distance distributions")
    c = d["curves"]
    t = np.asarray(c["thresholds"], dtype=float)
    series = [("far", "FAR: impostors accepted (distance)", "tab:red", "-"),
              ("frr", "FRR: genuine rejected (distance)", "tab:green", "-"),
              ("tar", "TAR: enrolled named right (classifier)", "tab:blue", "--"),
              ("trr", "TRR: strangers called unknown (classifier)", "tab:purple", "--")]
    for key, label, color, style in series:
        if c.get(key) is not None:
            curve.plot(t, np.array(c[key], dtype=float), style, color=color, label=label, lw=1.8)
    configured = report["settings"]["configured_threshold"]
    chosen = d["chosen"]["threshold"] if d["chosen"] else None
    if chosen is not None:
        why = (f"FAR <= {report['settings']['target_far']:.0%}" if d["chosen"]["basis"] == "target_far"
               else "EER point: too few impostors")
    for ax in (hist, curve):
        ax.axvline(configured, color="0.3", ls=":", lw=1.6, label=f"configured {configured:.3f}")
        if chosen is not None:
            ax.axvline(chosen, color="tab:orange", lw=1.6, label=f"chosen {chosen:.3f} ({why})")
        ax.grid(alpha=0.3)
    if d["eer"]:
        e = d["eer"]
        curve.plot([e["threshold"]], [e["rate"]], "ko", ms=6, label=f"EER {e['rate']:.1%} at {e['threshold']:.3f}")
    curve.set(xlabel="distance threshold", ylabel="rate", title="Accept / reject rates vs threshold",
              xlim=(float(bins[0]), float(bins[-1])), ylim=(-0.02, 1.02))
    hist.set_xlim(float(bins[0]), float(bins[-1]))
    for ax in (hist, curve):  # legends under the plots, never over a curve
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1 if portrait else 2,
                  frameon=False)
    fig.suptitle(_headline(report), fontsize=9 if portrait else 11, wrap=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def _headline(report: dict) -> str:
    d, cs = report["distances"], report["closed_set"]
    name = report.get("dir") or "the enrolled gallery"
    parts = [f"face-agent {report['command']}: {name}", f"{len(report['people'])} people"]
    if cs["accuracy"] is not None:
        parts.append(f"closed-set accuracy {cs['accuracy']:.1%}")
    if d["eer"]:
        parts.append(f"EER {d['eer']['rate']:.1%} at {d['eer']['threshold']:.3f}")
    return ", ".join(parts)


def _items(report: dict) -> list[dict]:
    if report["command"] == "tune":
        return report["photos"]
    return [q for s in report["splits"] for q in s["queries"]]
