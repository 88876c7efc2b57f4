"""The recipient pages (unsubscribe, preferences) in a real headless Chromium.

The Kinto app of :class:`EmailerWebTest` is served over real HTTP on 127.0.0.1, on the
port that its ``kinto.emailer.public_url`` names, so the links of the emails point at it
and the browser follows them as a recipient would. Needs Debian's ``chromium`` and
``chromium-driver`` (``.ci/run`` installs them): elsewhere the tests are skipped, in CI
they fail.
"""

import os
import re
import shutil
import tempfile
import threading
import unittest
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import compat32
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from kinto_emailer import inbox
from kinto_emailer.inbox_page import MARK_ALL, MARK_ONE
from kinto_emailer.views import RESUME, STOP_ALL
from tests.support import IN_CI, EmailerWebTest, Received, free_port


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
MISSING = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
INSTALL = "apt-get install -y --no-install-recommends chromium chromium-driver"

# The network is closed: without these Chromium waits on connections to Google's services.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WAIT = 10.0
REPLACED = "does not belong to the document"
"""What ChromeDriver says, at times, of an element of a page that was just replaced."""
CHOICES = ("immediate", "daily", "weekly", "off")

A = "a@example.com"
B = "b@example.com"
HOOK = {"template": "{uri}", "recipients": [A, B], "resource_name": "record"}

# The text body ends with this footer (an inbox link for mail of hooks that leave web
# notifications too, no unsubscribe link for mail that cannot be turned off); whether the
# URLs stand in angle brackets is left open.
FOOTER = re.compile(
    r"\n-- \nChoose which emails you get: <?(?P<page>\S+?)>?\n"
    r"(?:Your notifications on the web: <?(?P<inbox>\S+?)>?\n)?"
    r"(?:Unsubscribe: <?(?P<unsubscribe>\S+?)>?\n)?\Z"
)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # One line per request would bury pytest's output.


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    # Chromium opens spare connections it may never use: one thread each, or they block.
    daemon_threads = True


def start_chromium(profile: str) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # A driver path given: Selenium Manager is never asked (it would download one).
    service = Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    return driver


def needs_chromium(cls: type) -> type:
    """Skipped where the browser is missing, except in CI, which must run these tests."""
    if MISSING and not IN_CI:
        reason = f"needs Debian's Chromium: {', '.join(MISSING)} missing (`{INSTALL}`)"
        return unittest.skip(reason)(cls)
    return cls


@dataclass(frozen=True)
class Links:
    page: str
    unsubscribe: str | None
    inbox: str | None = None


@needs_chromium
class BrowserTest(EmailerWebTest):
    driver: WebDriver
    server: WSGIServer
    port: int
    base_url: str

    @classmethod
    def get_app_settings(cls, extras: dict | None = None) -> dict:
        public_url = {"emailer.public_url": f"http://127.0.0.1:{cls.port}/v1/"}
        return super().get_app_settings({**public_url, **(extras or {})})

    @classmethod
    def setUpClass(cls) -> None:
        if MISSING:
            # Only reached in CI, where a browser test that skips would hide a broken install.
            raise RuntimeError(f"CI=true but {', '.join(MISSING)} missing: run `{INSTALL}`")
        # Known before the app starts: its public URL, that the links of emails use.
        cls.port = free_port()
        cls.base_url = f"http://127.0.0.1:{cls.port}"
        super().setUpClass()
        profile = tempfile.mkdtemp(prefix="kinto-emailer-chromium-")
        cls.addClassCleanup(shutil.rmtree, profile, ignore_errors=True)
        cls.driver = start_chromium(profile)
        cls.addClassCleanup(cls.driver.quit)

    def setUp(self) -> None:
        super().setUp()
        # The very app that self.app tests, served over HTTP for the browser.
        self.server = make_server(
            "127.0.0.1", self.port, self.app.app, ThreadingWSGIServer, handler_class=QuietHandler
        )
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        self.create_collection()

    def tearDown(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        super().tearDown()

    # Emails.

    def create_record_over_http(self, uri: str = "/buckets/b/collections/c/records") -> Any:
        """Through the HTTP server, as a client of the server would."""
        response = requests.post(
            f"{self.base_url}/v1{uri}", json={"data": {}}, headers=self.headers, timeout=WAIT
        )
        self.assertEqual(response.status_code, 201, response.text)
        return response

    def recipients_of_next_record(self) -> set[str]:
        self.sink.clear()
        self.create_record_over_http()
        return {rcpt for mail in self.mails() for rcpt in mail.rcpt_tos}

    def mail_to(self, address: str) -> Received:
        [mail] = [m for m in self.mails() if address in m.rcpt_tos]
        return mail

    def links(self, mail: Received) -> Links:
        """The footer's links, checked against the List-Unsubscribe headers."""
        text = mail.message.get_content().replace("\r\n", "\n")
        match = FOOTER.search(text)
        self.assertIsNotNone(match, f"no footer at the end of:\n{text}")
        assert match is not None
        links = Links(match["page"], match["unsubscribe"], match["inbox"])
        self.assertTrue(links.page.startswith(f"{self.base_url}/v1/emailer/page?token="), links)
        if links.inbox is not None:
            self.assertTrue(
                links.inbox.startswith(f"{self.base_url}/v1/emailer/inbox?token="), links
            )
        if links.unsubscribe is None:
            self.assertIsNone(mail.message["List-Unsubscribe"])
            self.assertIsNone(mail.message["List-Unsubscribe-Post"])
            return links
        self.assertTrue(
            links.unsubscribe.startswith(f"{self.base_url}/v1/emailer/unsubscribe?token="), links
        )
        self.assertEqual(mail.message["List-Unsubscribe"], f"<{links.unsubscribe}>")
        self.assertEqual(mail.message["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click")
        return links

    def links_of_first_mail(self, address: str = A) -> Links:
        self.create_record_over_http()
        return self.links(self.mail_to(address))

    # Pages.

    def open(self, url: str) -> None:
        self.driver.get(url)
        self.assertEqual(self.navigation()["status"], 200, self.driver.page_source)

    def navigation(self) -> dict:
        """What the browser knows of the page's own request (Chromium 109+)."""
        return self.driver.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "return {status: n.responseStatus, redirects: n.redirectCount};"
        )

    def until(self, condition: Any, message: str) -> Any:
        def read(driver: WebDriver) -> Any:
            try:
                return condition(driver)
            except WebDriverException as e:
                # Instead of calling it stale, at times.
                if REPLACED in (e.msg or ""):
                    return False
                raise

        try:
            # The page may be replaced between finding an element and reading it.
            wait = WebDriverWait(
                self.driver, WAIT, ignored_exceptions=[StaleElementReferenceException]
            )
            return wait.until(read)
        except Exception as e:
            raise AssertionError(f"{message}; page:\n{self.driver.page_source}") from e

    def post_forms(self) -> list[WebElement]:
        return [
            f
            for f in self.driver.find_elements(By.TAG_NAME, "form")
            if (f.get_attribute("method") or "").lower() == "post"
        ]

    def button(self, text: str) -> WebElement:
        """The one submit button saying ``text``, in a POST form of its own."""
        found = [
            (form, button)
            for form in self.post_forms()
            for button in form.find_elements(By.CSS_SELECTOR, 'button[type="submit"]')
            if text in button.text
        ]
        self.assertEqual(len(found), 1, f"buttons {text!r}: {self.driver.page_source}")
        form, button = found[0]
        others = form.find_elements(By.CSS_SELECTOR, 'button[type="submit"]')
        self.assertEqual(others, [button], "a form with several submit buttons")
        return button

    def buttons(self) -> list[str]:
        return [
            b.text
            for f in self.post_forms()
            for b in f.find_elements(By.CSS_SELECTOR, 'button[type="submit"]')
        ]

    def h1(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "h1").text

    def radios(self, scope: str) -> dict[str, WebElement]:
        """The radio inputs of ``scope`` by value; matched by name, not by legend text."""
        found = [
            r
            for r in self.driver.find_elements(By.CSS_SELECTOR, 'input[type="radio"]')
            if r.get_attribute("name") == scope
        ]
        by_value = {r.get_attribute("value"): r for r in found}
        self.assertEqual(len(found), len(CHOICES), f"radios of {scope}: {list(by_value)}")
        self.assertEqual(set(by_value), set(CHOICES))
        return by_value

    def checked(self, scope: str) -> list[str]:
        return [value for value, r in self.radios(scope).items() if r.is_selected()]

    def fieldset(self, element: WebElement) -> WebElement:
        fieldset = self.driver.execute_script("return arguments[0].closest('fieldset')", element)
        self.assertIsNotNone(fieldset, "radio outside any <fieldset>")
        return fieldset

    def label_of(self, radio: WebElement) -> WebElement:
        radio_id = radio.get_attribute("id")
        self.assertTrue(radio_id, f"radio {radio.get_attribute('value')} has no id")
        labels = self.driver.execute_script(
            "return Array.from(document.querySelectorAll('label'))"
            ".filter(l => l.htmlFor === arguments[0])",
            radio_id,
        )
        self.assertEqual(len(labels), 1, f"<label for={radio_id!r}>")
        return labels[0]

    def tab_to(self, target: WebElement, most: int = 40) -> int:
        """Press TAB from the top of the page until ``target`` has the focus; the count."""
        self.driver.execute_script("document.activeElement && document.activeElement.blur()")
        focused = "return document.activeElement === arguments[0]"
        for presses in range(1, most + 1):
            ActionChains(self.driver).send_keys(Keys.TAB).perform()
            if self.driver.execute_script(focused, target):
                return presses
        self.fail(f"{target.text!r} not reached after {most} TAB presses")


class UnsubscribePageTest(BrowserTest):
    def setUp(self) -> None:
        super().setUp()
        self.put_hooks("/buckets/b", HOOK)

    def test_get_changes_nothing_and_the_button_unsubscribes(self):
        links = self.links_of_first_mail()
        assert links.unsubscribe is not None

        self.open(links.unsubscribe)
        self.assertEqual(self.driver.find_element(By.TAG_NAME, "html").get_attribute("lang"), "en")
        self.assertEqual(self.buttons(), ["Unsubscribe", STOP_ALL])
        # Mail scanners and link previews fetch links: a GET must not unsubscribe.
        self.assertEqual(self.recipients_of_next_record(), {A, B})

        self.button("Unsubscribe").click()
        self.until(lambda d: "unsubscribed" in self.h1().lower(), "no 'unsubscribed' <h1>")
        self.assertEqual(self.navigation()["status"], 200)
        hrefs = [a.get_attribute("href") for a in self.driver.find_elements(By.TAG_NAME, "a")]
        self.assertIn(links.page, hrefs)

        self.assertEqual(self.recipients_of_next_record(), {B})

    def test_stop_all_mail_and_undo(self):
        links = self.links_of_first_mail()
        assert links.unsubscribe is not None
        self.open(links.unsubscribe)
        self.button(STOP_ALL).click()
        self.until(lambda d: RESUME in self.buttons(), f"no {RESUME!r} button")
        self.assertEqual(urlsplit(self.driver.current_url).path, "/v1/emailer/page")
        self.assertEqual(self.navigation(), {"status": 200, "redirects": 1})
        self.assertEqual(self.recipients_of_next_record(), {B})
        # From every bucket, even one that never mailed this address yet.
        self.app.put_json("/buckets/b2", headers=self.headers)
        self.app.put_json("/buckets/b2/collections/c", headers=self.headers)
        self.put_hooks("/buckets/b2", HOOK)
        self.create_record_over_http("/buckets/b2/collections/c/records")
        self.assertEqual({rcpt for mail in self.mails() for rcpt in mail.rcpt_tos}, {B})

        self.button(RESUME).click()
        self.until(lambda d: STOP_ALL in self.buttons(), f"no {STOP_ALL!r} button")
        self.assertEqual(self.recipients_of_next_record(), {A, B})

    def test_list_unsubscribe_header_as_sent(self):
        self.create_record_over_http()
        mail = self.mail_to(A)
        unsubscribe = self.links(mail).unsubscribe
        # As sent, not as Python decodes it: a mail client's one-click unsubscribe reads the
        # raw header. RFC 2369 ignores whitespace between the brackets; RFC 2047 words break it.
        raw = message_from_bytes(mail.data, policy=compat32)["List-Unsubscribe"]
        self.assertEqual(re.sub(r"\s+", "", str(raw)), f"<{unsubscribe}>")


class PreferencesPageTest(BrowserTest):
    def test_turning_a_scope_off(self):
        self.put_hooks("/buckets/b", HOOK)
        links = self.links_of_first_mail()

        self.open(links.page)
        self.assertEqual(self.driver.find_element(By.TAG_NAME, "html").get_attribute("lang"), "en")
        self.assertTrue(self.h1())
        radios = self.radios("/buckets/b")
        legend = self.fieldset(radios["off"]).find_element(By.TAG_NAME, "legend")
        self.assertIn("/buckets/b", legend.text)
        self.assertEqual(self.checked("/buckets/b"), ["immediate"])

        # A click on the label, as a person does, must select its radio.
        self.label_of(radios["off"]).click()
        self.assertTrue(radios["off"].is_selected())
        self.button("Save").click()

        self.until(
            lambda d: any(
                "saved" in s.text.lower()
                for s in d.find_elements(By.CSS_SELECTOR, '[role="status"]')
            ),
            "no role=status element saying 'saved'",
        )
        # POST, then 303 to the page itself.
        self.assertEqual(urlsplit(self.driver.current_url).path, "/v1/emailer/page")
        self.assertEqual(self.navigation(), {"status": 200, "redirects": 1})
        self.assertEqual(self.checked("/buckets/b"), ["off"])

        self.assertEqual(self.recipients_of_next_record(), {B})

    def test_a_link_shows_only_the_places_its_email_came_from(self):
        self.put_hooks("/buckets/b", HOOK)
        self.app.put_json("/buckets/b/collections/d", headers=self.headers)
        self.put_hooks("/buckets/b/collections/d", HOOK)
        # The address gets mail from there too.
        self.create_record_over_http("/buckets/b/collections/d/records")
        self.assertEqual(len(self.mails()), 2)
        self.sink.clear()
        links = self.links_of_first_mail()

        self.open(links.page)
        names = {
            r.get_attribute("name")
            for r in self.driver.find_elements(By.CSS_SELECTOR, 'input[type="radio"]')
        }
        self.assertEqual(names, {"/buckets/b"})
        self.assertEqual(self.buttons(), ["Save", STOP_ALL])

    def test_a_non_editable_hook_is_locked(self):
        self.put_hooks("/buckets/b/collections/c", {**HOOK, "non_editable": True})
        links = self.links_of_first_mail()
        # Nothing to unsubscribe from: the email has no such link, nor header.
        self.assertIsNone(links.unsubscribe)

        self.open(links.page)
        scope = "/buckets/b/collections/c"
        radios = self.radios(scope)
        fieldset = self.fieldset(radios["immediate"])
        self.assertIn(scope, fieldset.find_element(By.TAG_NAME, "legend").text)
        self.assertIn("locked", fieldset.text.lower())
        self.assertEqual([v for v, r in radios.items() if r.is_enabled()], [])
        self.assertEqual(self.checked(scope), ["immediate"])


class WebColumnTest(BrowserTest):
    """The grid's web column: one checkbox per scope, beside the email cadence."""

    extra_settings = {
        # Recipients read their web notifications as users whose address a proxy proved.
        "multiauth.policies": "proxy basicauth",
        "multiauth.policy.proxy.use": "tests.plugins.ForwardedEmailPolicy",
        "emailer.verified_principals": "proxy",
    }

    def web_box(self, scope: str) -> WebElement:
        """The checkbox of ``scope``'s web notifications, found by its row of the grid."""
        boxes = self.driver.find_elements(By.CSS_SELECTOR, 'input[type="checkbox"]')
        found = [b for b in boxes if self.headers_of(b)[0] == scope]
        self.assertEqual(len(found), 1, f"checkboxes of {scope}: {self.driver.page_source}")
        return found[0]

    def headers_of(self, control: WebElement) -> list[str]:
        """The row and column headers of the grid's cell holding ``control``."""
        return self.driver.execute_script(
            "const cell = arguments[0].closest('td');"
            "const row = cell.closest('tr').querySelector('th[scope=row]');"
            "const column = cell.closest('table').tHead.rows[0].cells[cell.cellIndex];"
            "return [row.textContent, column.textContent];",
            control,
        )

    def feed(self, address: str) -> list[dict]:
        headers = {"X-Forwarded-Email": address}
        return self.app.get("/emailer/notifications", headers=headers).json["data"]

    def saved(self) -> None:
        self.until(
            lambda d: any(
                "saved" in s.text.lower()
                for s in d.find_elements(By.CSS_SELECTOR, '[role="status"]')
            ),
            "no role=status element saying 'saved'",
        )

    def test_turning_web_notifications_off_and_on_again(self):
        self.put_hooks("/buckets/b", {**HOOK, "channels": ["email", "web"]})
        links = self.links_of_first_mail()
        self.assertEqual(len(self.feed(A)), 1)

        self.open(links.page)
        box = self.web_box("/buckets/b")
        self.assertTrue(box.is_selected())
        # A grid: the row of its scope, the column of its channel; a name that says both.
        self.assertEqual(self.headers_of(box), ["/buckets/b", "Web"])
        off = self.radios("/buckets/b")["off"]
        self.assertEqual(self.headers_of(off), ["/buckets/b", "Email"])
        self.assertEqual(box.accessible_name, "Web notifications from /buckets/b")
        self.assertEqual(self.fieldset(off).accessible_name, "Email from /buckets/b")

        # A click on the label, as a person does, unchecks it.
        self.label_of(box).click()
        self.assertFalse(box.is_selected())
        self.button("Save").click()
        self.saved()
        self.assertFalse(self.web_box("/buckets/b").is_selected())
        self.assertEqual(self.checked("/buckets/b"), ["immediate"])
        # Email goes on; web notifications stop.
        self.assertEqual(self.recipients_of_next_record(), {A, B})
        self.assertEqual(len(self.feed(A)), 1)
        self.assertEqual(len(self.feed(B)), 2)

        # By keyboard: SPACE checks it again, ENTER on Save saves.
        box = self.web_box("/buckets/b")
        self.tab_to(box)
        ActionChains(self.driver).send_keys(Keys.SPACE).perform()
        self.assertTrue(box.is_selected())
        self.tab_to(self.button("Save"))
        ActionChains(self.driver).send_keys(Keys.ENTER).perform()
        self.saved()
        self.assertTrue(self.web_box("/buckets/b").is_selected())
        self.assertEqual(self.recipients_of_next_record(), {A, B})
        self.assertEqual(len(self.feed(A)), 2)

    def test_a_lock_of_web_notifications_leaves_email_free(self):
        self.put_hooks(
            "/buckets/b", {**HOOK, "channels": ["email", "web"], "non_editable": ["web"]}
        )
        links = self.links_of_first_mail()
        self.open(links.page)
        box = self.web_box("/buckets/b")
        self.assertFalse(box.is_enabled())
        self.assertTrue(box.is_selected())
        # Why it cannot be changed, read with it.
        note = self.driver.find_element(By.ID, box.get_attribute("aria-describedby"))
        self.assertIn("locked", note.text.lower())
        self.assertTrue(all(r.is_enabled() for r in self.radios("/buckets/b").values()))
        self.label_of(self.radios("/buckets/b")["off"]).click()
        self.button("Save").click()
        self.saved()
        self.assertEqual(self.recipients_of_next_record(), {B})
        self.assertEqual(len(self.feed(A)), 2)


class AccessibilityTest(BrowserTest):
    """What the DOM tells: language, labels, keyboard access."""

    def setUp(self) -> None:
        super().setUp()
        self.put_hooks("/buckets/b", HOOK)
        self.mail_links = self.links_of_first_mail()

    def assert_language(self) -> None:
        lang = self.driver.execute_script("return document.documentElement.lang")
        self.assertEqual(lang, "en")

    def assert_styled(self) -> None:
        # The page's own style applies: no security policy of Kinto's blocks it.
        width = self.driver.execute_script("return getComputedStyle(document.body).maxWidth")
        self.assertNotEqual(width, "none")

    def assert_stop_all_is_labelled(self) -> None:
        # Its own region, named by its heading: a screen reader lists it among landmarks.
        section = self.driver.execute_script(
            "return arguments[0].closest('section')", self.button(STOP_ALL)
        )
        self.assertIsNotNone(section, "the stop-all button is outside any <section>")
        heading = self.driver.find_element(By.ID, section.get_attribute("aria-labelledby"))
        self.assertEqual(heading.tag_name, "h2")
        self.assertTrue(heading.text.strip())

    def test_preferences_page(self):
        self.open(self.mail_links.page)
        self.assert_language()
        self.assert_styled()
        self.assert_stop_all_is_labelled()
        radios = self.driver.find_elements(By.CSS_SELECTOR, 'input[type="radio"]')
        self.assertTrue(radios)
        for radio in radios:
            name, value = radio.get_attribute("name"), radio.get_attribute("value")
            with self.subTest(name=name, value=value):
                self.assertTrue(self.label_of(radio).text.strip(), "empty label")
                # Radios of one scope are a group: a screen reader announces its legend.
                self.fieldset(radio).find_element(By.TAG_NAME, "legend")

        self.tab_to(self.button("Save"))
        # Reached, and usable: ENTER on the focused button saves.
        ActionChains(self.driver).send_keys(Keys.ENTER).perform()
        self.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, '[role="status"]'),
            "ENTER on Save showed no role=status element",
        )

        self.tab_to(self.button(STOP_ALL))
        ActionChains(self.driver).send_keys(Keys.ENTER).perform()
        self.until(lambda d: RESUME in self.buttons(), f"ENTER on {STOP_ALL!r} did nothing")
        self.assertEqual(self.recipients_of_next_record(), {B})
        self.tab_to(self.button(RESUME))
        ActionChains(self.driver).send_keys(Keys.ENTER).perform()
        self.until(lambda d: STOP_ALL in self.buttons(), f"ENTER on {RESUME!r} did nothing")
        self.assertEqual(self.recipients_of_next_record(), {A, B})

    def test_unsubscribe_page(self):
        assert self.mail_links.unsubscribe is not None
        self.open(self.mail_links.unsubscribe)
        self.assert_language()
        self.assert_styled()
        self.assert_stop_all_is_labelled()
        self.tab_to(self.button("Unsubscribe"))
        self.tab_to(self.button(STOP_ALL))
        # Only reached: pressing them would change what is sent, which other tests cover.
        self.assertEqual(self.recipients_of_next_record(), {A, B})


class InboxPageTest(BrowserTest):
    """The web notifications of a hook with both channels, from the link of its email."""

    def setUp(self) -> None:
        super().setUp()
        self.put_hooks("/buckets/b", {**HOOK, "subject": "{id}", "channels": ["email", "web"]})

    def unread(self) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, "ol.notifications > li.unread")

    def unread_in_storage(self, address: str) -> int:
        store = inbox.InboxStore(self.registry.storage, self.registry.emailer_settings)
        return store.count(address, unread=True)

    def test_open_from_an_email_mark_one_then_all_read(self):
        ids = [self.create_record_over_http().json()["data"]["id"] for _ in range(2)]
        [*_, newest] = [m for m in self.mails() if A in m.rcpt_tos]
        links = self.links(newest)
        assert links.inbox is not None

        self.open(links.inbox)
        self.assertEqual(self.driver.find_element(By.TAG_NAME, "html").get_attribute("lang"), "en")
        self.assertEqual(self.h1(), "Your notifications")
        # The page's own style applies: the security policy blocks no part of it.
        border = self.driver.execute_script(
            "return getComputedStyle(arguments[0]).borderLeftStyle", self.unread()[0]
        )
        self.assertEqual(border, "solid")
        # Unread, in words: what a screen reader reads too, not a color only.
        unread = self.unread()
        self.assertEqual(len(unread), 2)
        headings = [item.find_element(By.TAG_NAME, "h2") for item in unread]
        self.assertEqual([h.text for h in headings], [f"Unread: {i}" for i in reversed(ids)])
        hrefs = [h.find_element(By.TAG_NAME, "a").get_attribute("href") for h in headings]
        records = f"{self.base_url}/v1/buckets/b/collections/c/records"
        self.assertEqual(hrefs, [f"{records}/{i}" for i in reversed(ids)])
        # Each "Mark read" button is described by the heading of its notification.
        first = unread[0].find_element(By.CSS_SELECTOR, 'button[type="submit"]')
        self.assertEqual(first.text, MARK_ONE)
        self.assertEqual(first.get_attribute("aria-describedby"), headings[0].get_attribute("id"))

        # By keyboard: TAB to the newest one's button, ENTER.
        self.tab_to(first)
        ActionChains(self.driver).send_keys(Keys.ENTER).perform()
        self.until(lambda d: len(self.unread()) == 1, "ENTER on Mark read did not mark it")
        self.assertEqual(self.navigation(), {"status": 200, "redirects": 1})
        status = self.driver.find_element(By.CSS_SELECTOR, '[role="status"]')
        self.assertIn("read", status.text.lower())
        self.assertEqual(
            self.unread()[0].find_element(By.TAG_NAME, "h2").text, f"Unread: {ids[0]}"
        )
        self.assertEqual(self.unread_in_storage(A), 1)

        self.button(MARK_ALL).click()
        self.until(lambda d: not self.unread(), "Mark all read left unread notifications")
        self.assertEqual(urlsplit(self.driver.current_url).path, "/v1/emailer/inbox")
        items = self.driver.find_elements(By.CSS_SELECTOR, "ol.notifications > li")
        self.assertEqual([i.find_element(By.TAG_NAME, "h2").text for i in items], ids[::-1])
        self.assertNotIn(MARK_ALL, self.buttons())
        self.assertEqual(self.unread_in_storage(A), 0)
        self.assertEqual(self.unread_in_storage(B), 2)
