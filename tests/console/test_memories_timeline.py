"""The Memories screen over many memories and over time: a page at a time (never all of
them), superseded memories on request, what was true at a past moment; and a narrow screen."""

from __future__ import annotations

from playwright.async_api import Request, expect

from tests.console.conftest import Project, Screenshots, Tab
from tests.consolidate.scripted_brain import Brain, FactSpec, ends
from tests.consolidate.test_consolidation_api import consolidate


async def test_a_long_list_comes_a_page_at_a_time(tab: Tab, project: Project,
                                                  screenshots: Screenshots) -> None:
    added = await project.api.post("/v1/memories", json={
        "messages": [{"role": "user", "content": f"note number {n}"} for n in range(120)],
        "infer": False, "user_id": "many"})
    assert added.status_code == 201, added.text
    page = tab.page
    asked: list[str] = []

    def note(request: Request) -> None:
        if "/v1/memories?" in request.url:
            asked.append(request.url)

    page.on("request", note)
    # By keyboard alone: the key, Enter; the scope, Enter.
    await tab.open()
    await page.get_by_label("API key").fill(project.key)
    await page.keyboard.press("Enter")
    await page.get_by_label("User id").fill("many")
    await page.keyboard.press("Enter")
    results = page.get_by_role("region", name="Results")
    rows = results.locator("tbody tr")
    more = results.get_by_role("button", name="Load more")
    await expect(rows).to_have_count(50)
    await expect(results).to_contain_text("50 shown; more to load")
    await more.click()
    await expect(rows).to_have_count(100)
    await more.click()
    await expect(rows).to_have_count(120)
    await expect(more).to_be_hidden()
    await expect(rows.last).to_contain_text("note number 0")
    listed = [url for url in asked if "user_id=many" in url]
    assert len(listed) == 3
    assert all("limit=50" in url for url in listed)

    # On a phone: one column, the list and then the detail.
    await page.set_viewport_size({"width": 390, "height": 844})
    await expect(results.get_by_role("columnheader", name="Created")).to_be_hidden()
    await rows.first.get_by_role("button").focus()
    await page.keyboard.press("Enter")
    detail = page.get_by_role("complementary", name="Memory detail")
    await expect(detail.locator(".memory-text")).to_have_text("note number 119")
    await detail.scroll_into_view_if_needed()
    await screenshots.take(page, "memories-narrow", full_page=False)


async def test_superseded_memories_and_the_past(tab: Tab, project: Project, brain: Brain,
                                                screenshots: Screenshots) -> None:
    brain.facts = {"I live in Paris since January 2024.": [FactSpec("User lives in Paris",
                                                                   "since January 2024")],
                   "I moved to Berlin on 1 May.": [FactSpec("User lives in Berlin",
                                                            "on 1 May")]}
    brain.still_true = ends(("User lives in Berlin", "User lives in Paris"))
    await consolidate(project.api, "I live in Paris since January 2024.",
                      observed_at="2024-01-10T10:00:00Z")
    await consolidate(project.api, "I moved to Berlin on 1 May.",
                      observed_at="2024-06-01T10:00:00Z")
    page = tab.page
    await tab.open()
    await tab.sign_in(project.key)
    await page.get_by_label("User id").fill("u1")
    await page.get_by_label("Kind").select_option("fact")
    results = page.get_by_role("region", name="Results")
    memories = results.locator("tbody tr")
    await page.get_by_role("button", name="List memories").click()
    await expect(memories).to_have_count(1)
    await expect(memories.first).to_contain_text("User lives in Berlin")

    await page.get_by_label("Include superseded").check()
    await page.get_by_role("button", name="List memories").click()
    await expect(memories).to_have_count(2)
    paris = memories.filter(has_text="User lives in Paris")
    await expect(paris).to_contain_text("superseded")

    # The old memory says what replaced it, and leads there.
    await paris.get_by_role("button").click()
    detail = page.get_by_role("complementary", name="Memory detail")
    await expect(detail).to_contain_text("Invalid from")
    history = detail.locator("ol.history > li")
    await expect(history.last).to_contain_text("SUPERSEDE")
    await screenshots.take(page, "superseded")
    await detail.locator("dd button").first.click()  # "Superseded by"
    await expect(detail.locator(".memory-text")).to_have_text("User lives in Berlin")

    # What was true on 1 March 2024: Paris.
    await page.get_by_label("Include superseded").uncheck()
    await page.get_by_label("As of").fill("2024-03-01T00:00:00")
    await page.get_by_role("button", name="List memories").click()
    await expect(memories).to_have_count(1)
    await expect(memories.first).to_contain_text("User lives in Paris")
    await page.get_by_label("Query").fill("where does the user live")
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(results).to_contain_text("1 found")
    await expect(memories.first).to_contain_text("User lives in Paris")
