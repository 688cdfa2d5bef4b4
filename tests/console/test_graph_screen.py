"""The Graph screen: a scope's entities, one's neighbourhood at depth 1 and 2 with its
relations' validity, and a merged alias taken apart."""

from __future__ import annotations

import httpx
from playwright.async_api import expect

from tests.console.conftest import Project, Screenshots, Tab
from tests.consolidate.scripted_brain import Brain
from tests.graph.test_graph_pipeline import three_sessions


async def test_a_neighbourhood_and_an_unmerge(tab: Tab, project: Project, brain: Brain,
                                              screenshots: Screenshots) -> None:
    await three_sessions(project.api, brain)  # Melanie (alias Mel), Paris → Berlin, Siemens
    page = tab.page

    await tab.open("#/graph")
    await tab.sign_in(project.key)
    await page.get_by_label("User id").fill("u1")
    await page.get_by_role("button", name="Find entities").click()
    entities = page.get_by_role("region", name="Entities")
    await expect(entities.get_by_role("button", name="Melanie")).to_be_visible()

    await entities.get_by_role("button", name="Melanie").click()
    around = page.get_by_role("region", name="Neighbourhood")
    await expect(around.get_by_role("heading", name="Melanie")).to_be_focused()
    neighbours = around.locator("ul.neighbours > li")
    await expect(neighbours).to_have_count(3)
    assert sorted(await neighbours.all_inner_texts()) == [
        "Berlin — place, distance 1", "Siemens — organization, distance 1",
        "User — person, distance 1"]
    relations = around.locator("ul.relations > li")
    await expect(relations.filter(has_text="Mel lives_in Berlin")).to_contain_text("current")
    # Her move ended the Paris relation: listed with when it held.
    ended = relations.filter(has_text="Melanie lives_in Paris")
    await expect(ended).to_contain_text("ended")
    await expect(ended).to_contain_text("until")
    await expect(around.locator("svg.neighbourhood g[role=button]")).to_have_count(3)

    await page.get_by_label("Depth").select_option("2")
    await expect(neighbours.filter(has_text="distance 2")).to_have_count(1)
    await expect(neighbours.filter(has_text="distance 2")).to_contain_text("Paris")
    await expect(around.locator("svg line.invalid")).to_have_count(1)  # lived in Paris, ended
    await screenshots.take(page, "graph")

    # Recentred by keyboard on a node of the drawing.
    await around.locator("svg g[role=button]", has_text="Berlin").focus()
    await page.keyboard.press("Enter")
    await expect(around.get_by_role("heading", name="Berlin")).to_be_focused()

    # Mel was merged into Melanie; the page takes her apart again.
    await entities.get_by_role("button", name="Melanie").click()
    await expect(around.locator("ul.aliases")).to_contain_text("Mel")
    await around.get_by_role("button", name="Unmerge “Mel”").click()
    await page.get_by_role("dialog").get_by_role("button", name="Unmerge").click()
    await expect(page.get_by_role("status").first).to_contain_text("entity of its own")
    await expect(around.locator("ul.aliases")).to_have_count(0)
    listed = await project.api.get("/v1/entities", params={"user_id": "u1", "name": "Mel"})
    assert isinstance(listed, httpx.Response)
    assert sorted(e["name"] for e in listed.json()["results"]) == ["Mel", "Melanie"]
