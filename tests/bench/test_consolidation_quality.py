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


def bench(*arguments: str) -> tuple[dict[str, Any], str]:
    """Runs the benchmark; its JSON report and its progress lines."""
    done = subprocess.run([sys.executable, "-m", "bench.consolidation_quality", *arguments],
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout), done.stderr


async def test_a_rescore_of_kept_data_reports_the_recall_the_run_did(
        database_factory: Callable[[str], Awaitable[str]], scripted_llm: ScriptedLLM,
        brain: Brain, tmp_path: Path) -> None:
    brain.facts = {SESSION_2[0][1]: ["Ann works at a bakery in Porto"],
                   SESSION_2[2][1]: ["Ann has a cat named Miso"],
                   SESSION_2[3][1]: ["Bob adopted a parrot named Kiwi"]}
    data = tmp_path / "tiny.json"
    data.write_text(json.dumps([SAMPLE]))
    common = ["--data", str(data), "--conversations", "1", "--from-session", "2",
              "--server-env", f"ANAMNESIS_DB__URL={await database_factory('bench_quality')}",
              "--llm-url", scripted_llm.base_url, "--llm-model", "scripted-model"]
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
    finally:
        if kept is not None:
            shutil.rmtree(kept, ignore_errors=True)
