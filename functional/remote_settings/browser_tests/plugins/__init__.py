# From mozilla/remote-settings at commit 493d7f59cea9445c6d082944271c9e3a61571e68,
# file browser-tests/plugins/__init__.py.
# Apache License 2.0 (functional/remote_settings/LICENSE); unchanged below.
