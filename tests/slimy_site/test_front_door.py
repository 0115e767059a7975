"""`/` is a front door: links to the admin, the API docs, health and the README's quick start."""

import re

import pytest
from django.urls import reverse

from slimy_site.views import quick_start_blocks, readme_quick_start

pytestmark = pytest.mark.django_db


def test_front_door_links_to_admin_docs_health_and_quick_start(client):
    response = client.get("/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    links = dict(re.findall(r'<a id="(slimy-link-[a-z-]+)" href="([^"]+)"', page))
    assert links == {
        "slimy-link-admin": "/admin/",
        "slimy-link-docs": "/api/docs/",
        "slimy-link-health": "/health/ready",
        "slimy-link-quick-start": "#quick-start",
    }
    for url in ("/admin/", "/api/docs/", "/health/ready"):
        assert client.get(url).status_code in (200, 302), url  # the admin redirects to its login
    assert 'id="quick-start"' in page and "make run" in page  # the README section, inline


def test_quick_start_is_the_readmes_section_and_absent_readme_is_not_an_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# X\n\n## Quick start\n\nrun `make run`\n\n### First run\n\nyou see\n\n## Tests\n\nno\n")
    assert readme_quick_start(path=readme) == "run `make run`\n\n### First run\n\nyou see"
    assert readme_quick_start(path=tmp_path / "missing.md") == ""
    readme.write_text("# X\n\nno such section\n")
    assert readme_quick_start(path=readme) == ""


def test_admin_is_branded_slimy(client, django_user_model):
    login = client.get(reverse("admin:login")).content.decode()
    assert "<title>Log in | Slimy admin</title>" in login
    assert re.search(r'<div id="site-name"><a href="/admin/">Slimy</a></div>', login)
    assert "Django administration" not in login


def test_quick_start_keeps_code_as_is_and_joins_paragraph_lines():
    text = "run it:\n\n```sh\nmake run   # all\nmake test\n```\n\nA long\nwrapped line.\n\n### First run\n\nyou see"
    assert quick_start_blocks(text) == [
        {"kind": "paragraph", "text": "run it:"},
        {"kind": "code", "text": "make run   # all\nmake test"},
        {"kind": "paragraph", "text": "A long wrapped line."},
        {"kind": "heading", "text": "First run"},
        {"kind": "paragraph", "text": "you see"},
    ]
