"""The key's account: its request history (read in one place, ``history``) and its spend (``spend``)."""
