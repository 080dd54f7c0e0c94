"""The contract between station and registry: record, package format, keys, codecs."""
