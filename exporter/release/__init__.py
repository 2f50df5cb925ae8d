"""Release evidence: a run folder signed so a later step can trust what cnnexport verified (issue 44).

keys.py       EC P-256 / P-384 PEM keys, read with one clear sentence on anything else
dsse.py       DSSE envelopes (the in-toto signing wrapper), signed and checked with those keys
statement.py  the in-toto Statement v1 of a folder: its artifacts as subjects, the verdicts as predicate
folder.py     `cnnexport sign` / `verify --public-key`: the statement, then OpenSSF model-signing's model.sig
ci.py         CI-native results: JUnit XML and the GitHub step summary

Nothing here opens a network connection: keys are local files, signatures are checked offline.
"""
