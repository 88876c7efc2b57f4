"""Mozilla Remote Settings' own tests, run with this plugin in place of kinto-emailer 4.x.

See README.rst beside this file: where each file comes from, and what runs how.
"""
