"""The strong client's transport helpers: credential-free endpoint names, Retry-After, the crash watch."""

from email.utils import formatdate
import time

from cowest.models.transport import WATCHES, parse_retry_after, safe_endpoint, watch_endpoint


def test_safe_endpoint_drops_credentials_and_query():
    assert safe_endpoint("https://user:secret@api.example.com:8443/v1/?key=sk-1") == "https://api.example.com:8443/v1"


def test_parse_retry_after_seconds_and_dates():
    assert parse_retry_after("3") == 3.0 and parse_retry_after("-1") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = parse_retry_after(formatdate(time.time() + 30, usegmt=True))
    assert 25 < later <= 31


def test_watch_endpoint_registers_and_unregisters_only_itself():
    first = watch_endpoint("http://127.0.0.1:9/v1", lambda wait: None)
    assert "http://127.0.0.1:9/v1" in WATCHES
    second = watch_endpoint("http://127.0.0.1:9/v1", lambda wait: "exited")
    first()  # a stale unregister leaves the newer watch in place
    assert WATCHES["http://127.0.0.1:9/v1"](0) == "exited"
    second()
    assert "http://127.0.0.1:9/v1" not in WATCHES
