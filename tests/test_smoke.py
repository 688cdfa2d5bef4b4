import httpx


async def test_health_and_ready(anonymous: httpx.AsyncClient) -> None:
    assert (await anonymous.get("/health")).json() == {"status": "ok"}
    ready = await anonymous.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["embedding_dimension"] == 384
    # the model by its name: no path of the server's disk in a response
    assert ready.json()["embedding_model"] == "all-MiniLM-L6-v2"
    assert ready.json()["embedding_backend"] == "onnx"  # auto, on a CPU


async def test_add_then_search(client: httpx.AsyncClient) -> None:
    added = await client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": "My dog Rex loves swimming in the lake."}],
        "user_id": "u1", "infer": False})
    assert added.status_code == 201, added.text
    found = await client.post("/v1/memories/search", json={"query": "what does my dog like",
                                                            "user_id": "u1"})
    assert found.json()["results"][0]["id"] == added.json()["results"][0]["id"]
