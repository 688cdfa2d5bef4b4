"""The Jobs screen: a failed consolidation shows its error; retried from the page, it runs
again and the list follows it to SUCCEEDED by polling."""

from __future__ import annotations

from playwright.async_api import expect

from tests.console.conftest import Project, Screenshots, Tab
from tests.consolidate.scripted_brain import Brain
from tests.consolidate.test_consolidation_api import consolidate
from tests.scripted_llm import ScriptedLLM


async def test_a_failed_job_is_retried_from_the_page(
        tab: Tab, project: Project, brain: Brain, scripted_llm: ScriptedLLM,
        screenshots: Screenshots) -> None:
    brain.facts = {"I row.": ["User rows"], "I collect stamps.": ["User collects stamps"]}
    done = await consolidate(project.api, "I row.")
    scripted_llm.responder = lambda body: "I'm sorry, I can't produce JSON."
    failed = await consolidate(project.api, "I collect stamps.")
    assert failed["status"] == "FAILED"
    page = tab.page

    await tab.open("#/jobs")
    await tab.sign_in(project.key)
    await expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_focused()
    jobs = page.get_by_role("region", name="Recent jobs")
    stamps = jobs.locator(f'tr[data-id="{failed["id"]}"]')
    rowing = jobs.locator(f'tr[data-id="{done["id"]}"]')
    await expect(stamps).to_contain_text("FAILED")
    await expect(stamps).to_contain_text("llm_bad_output")
    await expect(rowing).to_contain_text("SUCCEEDED")
    await expect(rowing.get_by_role("button", name="Retry")).to_have_count(0)
    await screenshots.take(page, "jobs")

    # Only the failed ones.
    await page.get_by_label("Status").select_option("FAILED")
    await expect(jobs.locator("tbody tr")).to_have_count(1)
    await page.get_by_label("Status").select_option("")
    await expect(jobs.locator("tbody tr")).to_have_count(2)

    # What a finished job wrote, linked to the memory.
    await rowing.get_by_role("button").first.click()
    detail = page.get_by_role("complementary", name="Job detail")
    await expect(detail.get_by_role("link", name="User rows")).to_be_visible()

    scripted_llm.responder = brain
    await stamps.get_by_role("button", name="Retry").click()
    await expect(page.get_by_role("status").first).to_contain_text("queued again")
    await expect(stamps).to_contain_text("SUCCEEDED", timeout=30_000)
    await expect(stamps).not_to_contain_text("llm_bad_output")
    retried = (await project.api.get(f"/v1/jobs/{failed['id']}")).json()
    assert retried["status"] == "SUCCEEDED"
    assert [r["memory"] for r in retried["results"]] == ["User collects stamps"]

    # A job of the memory's history opens here, with what it wrote.
    await detail.get_by_role("link", name="User rows").click()
    await expect(page.get_by_role("heading", name="Memories", exact=True)).to_be_visible()
    await expect(page.get_by_role("complementary", name="Memory detail")
                 .locator(".memory-text")).to_have_text("User rows")
