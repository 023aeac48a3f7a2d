"""The Label Studio client against a scripted server (httpx's MockTransport): lists followed to
the last page whatever page size the server allows, and every failure one line."""

import httpx
import pytest

from digitops.labeling.studio import LabelingError, Studio, StudioSettings


def studio(handler) -> Studio:  # type: ignore[no-untyped-def]
    client = Studio(StudioSettings(url="http://ls.test", api_key="legacy-token"))
    client.http = httpx.Client(base_url=client.url, transport=httpx.MockTransport(handler))
    return client


def test_lists_are_followed_to_the_last_page():
    tasks = [{"id": n, "data": {"request_id": f"r{n}"}} for n in range(5)]
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        seen.append((request.url.path, page))
        assert request.headers["Authorization"] == "Token legacy-token"
        if request.url.path == "/api/tasks":  # we ask for 500 a page; the server gives 2
            return httpx.Response(200, json={"tasks": tasks[2 * page - 2 : 2 * page], "total": 5})
        projects = [
            {"id": 1, "title": "digitops digits copy"},
            {"id": 7, "title": "digitops digits"},
        ]
        more = page == 1
        return httpx.Response(
            200, json={"results": projects[page - 1 : page], "next": "x" if more else None}
        )

    client = studio(handler)
    assert [t["id"] for t in client._tasks(1, "all")] == [0, 1, 2, 3, 4]
    assert client.project_id(create=False) == 7  # the exact title, on the second page
    assert seen.count(("/api/tasks", 3)) == 1 and ("/api/tasks", 4) not in seen


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(401, json={"detail": "Invalid token."}), "refused the API key (401)"),
        (
            httpx.Response(302, headers={"Location": "/user/login/"}),
            "answered GET /api/projects with 302",
        ),
        (httpx.Response(200, text="<html>proxy login</html>"), "did not answer JSON"),
        (httpx.Response(500, text="<h1>boom</h1>\n<p>trace</p>"), "with 500: <h1>boom</h1> <p>"),
    ],
)
def test_every_failure_is_one_labeling_error(response: httpx.Response, message: str):
    client = studio(lambda request: response)
    with pytest.raises(LabelingError) as raised:
        client.project_id()
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_an_unreachable_server_and_a_url_without_scheme_are_one_line():
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    with pytest.raises(LabelingError, match="cannot reach Label Studio at http://ls.test"):
        studio(down).project_id()
    with pytest.raises(LabelingError, match="starts with http"):
        Studio(StudioSettings(url="localhost:8080", api_key="x"))
