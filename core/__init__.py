"""Light shared pieces of tiqu: settings, schema, prompting, names, errors.

Importing ``core`` never imports torch, transformers or peft.
"""
