"""Where the stages' searches go: :func:`open_retriever`, and the client of a retrieval server that speaks Search-R1's ``POST /retrieve`` API (:mod:`searchr2.server`,
or Search-R1's own ``retrieval_server.py``): a :class:`~searchr2.retrieval.Retriever` that opens no index.

It asks for scores and turns each returned document ``{"id", "contents"}`` back into our hit
``{"id", "title", "text", "score"}`` (:func:`searchr2.corpus.parse_contents`), so the results are
those of searching the same index in-process. A server that does not answer (refused, reset, timed
out, 5xx) is retried ``retries`` times with doubling back-off, then a :class:`RetrievalServerError`
names the URL and what happened; a 4xx (a request the server refuses) is not retried.
"""
from __future__ import annotations

import os
import time

from searchr2.corpus import parse_contents
from searchr2.retrieval import IndexConfig, RetrievalConfig, Retriever, load_retriever


class RetrievalServerError(RuntimeError):
    """The retrieval server could not answer, or refused the request."""


class RemoteRetriever:
    """``search(queries, k)`` through a retrieval server at ``url`` (e.g. ``http://127.0.0.1:8000``)."""

    def __init__(self, url: str, timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 0.5):
        import requests

        if not url.startswith(("http://", "https://")):
            raise ValueError(f"retrieval server URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.session = requests.Session()

    def health(self) -> tuple[int | None, dict]:
        """``GET /health``: (HTTP status, detail); (None, {}) when the server does not answer."""
        import requests

        try:
            response = self.session.get(f"{self.url}/health", timeout=self.timeout_s)
        except requests.RequestException:
            return None, {}
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        return response.status_code, detail if isinstance(detail, dict) else {}

    def ready(self) -> bool:
        """Whether the server answers ``GET /health`` with 200 (index loaded) now."""
        return self.health()[0] == 200

    def wait_ready(self, timeout_s: float = 600.0, poll_s: float = 1.0, method: str | None = None) -> None:
        """Block until the server's index is loaded (``GET /health`` 200; a server without /health, such as
        Search-R1's own, answers 404 and is taken as ready). With ``method``, fail unless the server says
        it serves that index. :class:`RetrievalServerError` after ``timeout_s`` or on a failed load."""
        deadline = time.monotonic() + timeout_s
        while True:
            status, detail = self.health()
            if status in (200, 404):
                break
            if status == 500:
                raise RetrievalServerError(f"retrieval server {self.url} failed to load its index: "
                                           f"{detail or 'see its log'}")
            if time.monotonic() > deadline:
                what = "did not answer" if status is None else f"answered HTTP {status}"
                raise RetrievalServerError(f"retrieval server {self.url} was not ready after {timeout_s:.0f} s "
                                           f"(GET /health {what}); start it with `python -m searchr2.server` or "
                                           "fix retrieval.server_url")
            time.sleep(poll_s)
        served = detail.get("method")
        if method is not None and served is not None and served != method:
            raise RetrievalServerError(f"retrieval server {self.url} serves the {served} index, but retrieval.method "
                                       f"is {method}")

    def search(self, queries: list[str], k: int) -> list[list[dict]]:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if not queries:
            return []
        body = self._post({"queries": list(queries), "topk": k, "return_scores": True})
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, list) or len(result) != len(queries):
            raise RetrievalServerError(f"retrieval server {self.url} answered {len(queries)} queries with "
                                       f"{'no result list' if not isinstance(result, list) else len(result)}")
        hits = []
        for ranked in result:
            row = []
            for hit in ranked:
                title, text = parse_contents(hit["document"]["contents"])
                row.append({"id": str(hit["document"]["id"]), "title": title, "text": text,
                            "score": float(hit["score"])})
            hits.append(row)
        return hits

    def _post(self, payload: dict) -> dict:
        import requests

        wait, problem = self.backoff_s, ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(wait)
                wait *= 2
            try:
                response = self.session.post(f"{self.url}/retrieve", json=payload, timeout=self.timeout_s)
            except requests.Timeout:
                problem = f"no answer within {self.timeout_s} s"
                continue
            except requests.ConnectionError as e:
                problem = f"cannot connect ({type(e).__name__})"
                continue
            if response.status_code == 200:
                return response.json()
            message = _error_text(response)
            if response.status_code < 500:
                raise RetrievalServerError(f"retrieval server {self.url} refused the request "
                                           f"(HTTP {response.status_code}): {message}")
            problem = f"HTTP {response.status_code}: {message}"
        raise RetrievalServerError(f"retrieval server {self.url} failed {self.retries + 1} time(s); last: {problem}. "
                                   "Is `python -m searchr2.server` running there (GET /health)?")


def _error_text(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("error") or body.get("detail") or body)[:200] if isinstance(body, dict) else str(body)[:200]


def open_retriever(retrieval: RetrievalConfig, index_dir: str | os.PathLike, cfg: IndexConfig) -> Retriever:
    """What the stages search with: the retrieval server at ``retrieval.server_url`` when one is set
    (:class:`RemoteRetriever`, once the server says it is ready and serves
    ``retrieval.method``; up to ``retrieval.server_wait_s`` seconds), else the
    ``retrieval.method`` index under ``index_dir`` opened in this process (:func:`load_retriever`)."""
    if retrieval.server_url is None:
        return load_retriever(retrieval.method, index_dir, cfg)
    remote = RemoteRetriever(retrieval.server_url, retrieval.server_timeout_s, retrieval.server_retries,
                             retrieval.server_backoff_s)
    remote.wait_ready(retrieval.server_wait_s, method=retrieval.method)
    return remote
