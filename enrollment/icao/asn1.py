"""ASN.1 schemas of ICAO 9303 that asn1crypto does not ship (asn1crypto is untyped, hence
the ``type: ignore[misc]`` on each subclass).
"""

from __future__ import annotations

from asn1crypto import algos, core


class SecurityInfo(core.Sequence):  # type: ignore[misc]
    """9303-11 9.2: SecurityInfo ::= SEQUENCE { protocol, requiredData, optionalData }."""

    _fields = [  # noqa: RUF012 (asn1crypto's declarative schema)
        ("protocol", core.ObjectIdentifier),
        ("required_data", core.Any),
        ("optional_data", core.Any, {"optional": True}),
    ]


class SecurityInfos(core.SetOf):  # type: ignore[misc]
    _child_spec = SecurityInfo


class DataGroupHash(core.Sequence):  # type: ignore[misc]
    _fields = [  # noqa: RUF012
        ("data_group_number", core.Integer),
        ("data_group_hash_value", core.OctetString),
    ]


class DataGroupHashValues(core.SequenceOf):  # type: ignore[misc]
    _child_spec = DataGroupHash


class LdsVersionInfo(core.Sequence):  # type: ignore[misc]
    _fields = [  # noqa: RUF012
        ("lds_version", core.PrintableString),
        ("unicode_version", core.PrintableString),
    ]


class LdsSecurityObject(core.Sequence):  # type: ignore[misc]
    """9303-10 4.6.2.2: LDSSecurityObject (v0; v1 adds ldsVersionInfo)."""

    _fields = [  # noqa: RUF012
        ("version", core.Integer),
        ("hash_algorithm", algos.DigestAlgorithm),
        ("data_group_hash_values", DataGroupHashValues),
        ("lds_version_info", LdsVersionInfo, {"optional": True}),
    ]


class DocumentTypes(core.SetOf):  # type: ignore[misc]
    _child_spec = core.PrintableString


class DocumentTypeList(core.Sequence):  # type: ignore[misc]
    """9303-12 7.1.1.3: the document types a Document Signer may sign."""

    _fields = [  # noqa: RUF012
        ("version", core.Integer),
        ("doc_type_list", DocumentTypes),
    ]
