"""``bench.consolidation_quality`` on a conversation of its own, the LLM scripted: a run that
keeps its data, then ``--rescore`` of that data, which must report the recall the run did
(facts mapped to their turns through the episodes of the project's export)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.managed_server import REPO_ROOT
from tests.consolidate.scripted_brain import Brain
from tests.scripted_llm import ScriptedLLM

SESSION_1 = [("Ann", "Hi Bob! Long week, I finally finished the garden fence."),
             ("Bob", "Nice work! Mine is still a mess of weeds.")]
SESSION_2 = [("Ann", "Big news: I started baking bread at a bakery in Porto."),
             ("Bob", "Porto! Do you like it there?"),
             ("Ann", "I love it. My cat Miso moved with me and sleeps all day."),
             ("Bob", "Lucky cat. I adopted a parrot called Kiwi last month.")]
SAMPLE = {
    "sample_id": "tiny-1",
    "conversation": {
        "speaker_a": "Ann", "speaker_b": "Bob",
        "session_1_date_time": "10:00 am on 3 May, 2023",
        "session_1": [{"speaker": who, "dia_id": f"D1:{n}", "text": text}
                      for n, (who, text) in enumerate(SESSION_1, 1)],
        "session_2_date_time": "6:30 pm on 9 May, 2023",
        "session_2": [{"speaker": who, "dia_id": f"D2:{n}", "text": text}
                      for n, (who, text) in enumerate(SESSION_2, 1)],
    },
    "qa": [{"question": "Where does Ann work?", "answer": "a bakery in Porto",
            "evidence": ["D2:1"], "category": 1},
           {"question": "What is the name of Ann's cat?", "answer": "Miso",
            "evidence": ["D2:3"], "category": 1},
           {"question": "What pet did Bob adopt?", "answer": "a parrot",
            "evidence": ["D2:4"], "category": 4},
           {"question": "What did Ann build?", "answer": "a garden fence",  # not measured
            "evidence": ["D1:1"], "category": 1}],
}


def run_bench(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.consolidation_quality", *arguments],
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, text=True, timeout=600, check=False)


def bench(*arguments: str) -> tuple[dict[str, Any], str]:
    """Runs the benchmark; its JSON report and its progress lines."""
    done = run_bench(*arguments)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout), done.stderr


def refused(*arguments: str) -> str:
    """Runs the benchmark, which must stop without a report; what it said."""
    done = run_bench(*arguments)
    assert done.returncode != 0, done.stdout
    assert not done.stdout.strip(), done.stdout
    return done.stderr


async def test_a_rescore_of_kept_data_reports_the_recall_the_run_did(
        database_factory: Callable[[str], Awaitable[str]], scripted_llm: ScriptedLLM,
        brain: Brain, tmp_path: Path) -> None:
    brain.facts = {SESSION_2[0][1]: ["Ann works at a bakery in Porto"],
                   SESSION_2[2][1]: ["Ann has a cat named Miso"],
                   SESSION_2[3][1]: ["Bob adopted a parrot named Kiwi"]}
    data = tmp_path / "tiny.json"
    data.write_text(json.dumps([SAMPLE]))

    def arguments(data: Path, database: str) -> list[str]:
        return ["--data", str(data), "--conversations", "1", "--from-session", "2",
                "--server-env", f"ANAMNESIS_DB__URL={database}",
                "--llm-url", scripted_llm.base_url, "--llm-model", "scripted-model"]
    database = await database_factory("bench_quality")
    common = arguments(data, database)
    kept = None
    try:
        run, said = bench("--part", "locomo", "--keep-data", *common)
        kept = re.findall(r"kept (\S+)", said)[-1]
        measured = run["locomo"]
        assert measured["episodes"] == 1
        assert measured["jobs"]["SUCCEEDED"] == 1
        assert brain.extract_calls == 1  # session 1 was posted as messages only
        facts = measured["recall"]["facts"]["recall@1"]["overall"]
        assert facts == {"questions": 3, "any": 1.0}  # the session 1 question is not asked

        again, _ = bench("--rescore", kept, *common)
        assert again["locomo"]["recall"] == measured["recall"]
        assert again["locomo"]["fusion_losses"] == measured["fusion_losses"]
        assert brain.extract_calls == 1  # nothing posted, nothing extracted again

        # Data kept for another conversation, or no run's data at all: said, not scored.
        other = tmp_path / "other.json"
        other.write_text(json.dumps([{**SAMPLE, "sample_id": "tiny-2"}]))
        assert "holds 0 users for tiny-2" in refused(
            "--rescore", kept, *arguments(other, database))
        empty = tmp_path / "empty"
        assert "--rescore takes the folder a --keep-data run kept" in refused(
            "--rescore", str(empty), *common)  # no such folder
        empty.mkdir()
        assert "holds 0 bench-quality-… projects" in refused(
            "--rescore", str(empty),
            *arguments(data, await database_factory("bench_quality_empty")))
    finally:
        if kept is not None:
            shutil.rmtree(kept, ignore_errors=True)
