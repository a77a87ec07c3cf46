"""A general-domain evaluation suite built offline from human translations that ship inside
installed packages: the gettext catalogs of Django and Sphinx, CLDR display names in Babel, and
the ISO names of pycountry (Debian's iso-codes), for English <-> id, th, vi, ms, tl, pt-BR.

`general_suite()` returns the (cached) suite file; `write_general_suite(out)` builds one.
"""

from pipelines.general_suite.build import general_suite, write_general_suite

__all__ = ["general_suite", "write_general_suite"]
