"""Failed sign-ins are counted per address and name; past the limit they are refused
without a password check, and the count ages out."""

from __future__ import annotations

from cxr_screen.web.throttle import SignInThrottle
from tests.unit.web.conftest import Web, csrf_of
from tests.web_seed import READER


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_is_per_address_and_name_and_ages_out() -> None:
    clock = _Clock()
    throttle = SignInThrottle(limit=3, window_s=60.0, clock=clock)
    for _ in range(3):
        assert throttle.allowed("10.0.0.1", "rita")
        throttle.failed("10.0.0.1", "rita")
    assert not throttle.allowed("10.0.0.1", "rita")
    assert throttle.allowed("10.0.0.1", "sam")  # another name from the same proxy
    assert throttle.allowed("10.0.0.2", "rita")
    clock.now += 61
    assert throttle.allowed("10.0.0.1", "rita")


def test_a_success_forgets_the_failures() -> None:
    throttle = SignInThrottle(limit=2, window_s=60.0, clock=_Clock())
    throttle.failed("a", "rita")
    throttle.succeeded("a", "rita")
    throttle.failed("a", "rita")
    assert throttle.allowed("a", "rita")


def test_the_sign_in_page_refuses_unchecked_past_the_limit(web: Web) -> None:
    name, password = READER

    def attempt(given: str) -> int:
        token = csrf_of(web.client.get("/login").text)
        response = web.client.post(
            "/login",
            data={"name": name, "password": given, "csrf_token": token},
            follow_redirects=False,
        )
        return response.status_code

    assert [attempt("wrong password!") for _ in range(10)] == [401] * 10
    # The right password too: the address is refused for this name until it ages out.
    assert attempt(password) == 429
