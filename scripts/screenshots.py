"""Screenshots of the page at / of ``nmt-serve``, taken in a real browser, for docs/serving.md.

    python scripts/screenshots.py --run-dir runs/X                        # one model
    python scripts/screenshots.py --run-dir runs/gru --compare runs/lstm  # two, side by side

Starts ``nmt-serve run_dir=... backend=torch`` (the gates are traced in PyTorch) on a free
loopback port, opens the page in headless Chromium, translates ``--text`` and saves, under
``--out`` (docs/images/serving/ by default): ``attention.png`` (the attention of the sentence),
``gates.png`` (each layer's gates, token by token), ``units.png`` (the decoder's first gate unit by
unit) and, with ``--compare``, ``side_by_side.png`` (the whole page). ``screenshots.json`` beside
them records the command, commit, machine and date, each model's run directory and the
translations shown.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from nmt.core.overrides import quoted
from nmt.core.provenance import provenance
from nmt.core.rundir import write_json
from nmt.core.runtime import describe_device

ROOT = Path(__file__).resolve().parents[1]
TEXT = "A little girl in a pink dress is climbing the stairs to her wooden playhouse."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(run_dir: str, compare: list[str], port: int) -> subprocess.Popen:
    """nmt-serve in a process of its own; returns once it answers /health."""
    command = [
        str(Path(sys.executable).parent / "nmt-serve"),
        f"run_dir={quoted(str(run_dir))}",
        f"port={port}",
        "backend=torch",
        "precision=fp32",
    ]
    if compare:
        command.append(f"compare=[{','.join(quoted(str(c)) for c in compare)}]")
    service = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if service.poll() is not None:
            out = service.stdout.read().decode(errors="replace")[-2000:]
            sys.exit(f"screenshots: nmt-serve stopped: {out}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return service
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    service.kill()
    sys.exit("screenshots: nmt-serve did not answer within 120 s")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        sys.exit("screenshots: needs chromium and chromedriver on PATH")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1500,1400")
    options.add_argument("--force-device-scale-factor=1")
    options.binary_location = binary
    return webdriver.Chrome(options=options, service=Service(driver_path))


def shoot(url: str, text: str, out: Path, models: int) -> dict[str, Path]:
    """Translate ``text`` on the page and save the screenshots; their paths by name."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    shots: dict[str, Path] = {}
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 120)
        wait.until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "section.model p.about")) == models
        )
        box = driver.find_element(By.ID, "text")
        box.clear()
        box.send_keys(text)
        driver.find_element(By.ID, "go").click()
        wait.until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "section.model ol.out")) == models
        )
        first = driver.find_elements(By.CSS_SELECTOR, "section.model")[0]

        def save(element, name: str) -> None:
            driver.execute_script("arguments[0].scrollIntoView()", element)
            shots[name] = out / f"{name}.png"
            element.screenshot(str(shots[name]))

        save(first.find_element(By.CSS_SELECTOR, 'figure.map[data-kind="attention"]'), "attention")
        save(first.find_element(By.CSS_SELECTOR, ".gate-maps"), "gates")
        decoder = first.find_elements(By.CSS_SELECTOR, 'figure.map[data-kind="gates"]')[-1]
        decoder.find_elements(By.CSS_SELECTOR, "thead th.gate")[0].click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'figure.map[data-kind="units"]'))
        save(first.find_element(By.CSS_SELECTOR, 'figure.map[data-kind="units"]'), "units")
        if models > 1:
            save(driver.find_element(By.ID, "models"), "side_by_side")
    finally:
        driver.quit()
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", required=True, help="the model's run directory")
    parser.add_argument("--compare", action="append", default=[], help="a model shown beside it")
    parser.add_argument("--text", default=TEXT, help="the sentence translated")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "serving")
    args = parser.parse_args()
    for place in [args.run_dir, *args.compare]:
        if not (Path(place) / "config.yaml").is_file():
            sys.exit(f"screenshots: {place} is not a run directory (no config.yaml)")
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    service = start_service(args.run_dir, args.compare, port)
    url = f"http://127.0.0.1:{port}"
    try:
        models = httpx.get(f"{url}/models", timeout=10).json()
        shots = shoot(f"{url}/", args.text, args.out, len(models))
        translations = {
            m["name"]: httpx.post(
                f"{url}/translate", json={"text": [args.text], "model": m["name"]}, timeout=120
            ).json()["translations"][0]
            for m in models
        }
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=30)
    record = {
        **provenance(),
        "command": shlex.join(["python", "scripts/screenshots.py", *sys.argv[1:]]),
        "machine": describe_device(__import__("torch").device("cpu")),
        "models": [
            {"name": m["name"], "run_dir": os.path.relpath(p, ROOT), "cell": m.get("cell")}
            for m, p in zip(models, [args.run_dir, *args.compare], strict=True)
        ],
        "text": args.text,
        "translations": translations,
        "screenshots": {name: path.name for name, path in shots.items()},
    }
    write_json(args.out / "screenshots.json", record)
    print(f"wrote {', '.join(p.name for p in shots.values())} and screenshots.json to {args.out}")


if __name__ == "__main__":
    main()
