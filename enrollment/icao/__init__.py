"""ICAO Doc 9303 (8th edition) for the chip ID card: the logical data structure (part 10),
EF.SOD and passive authentication (part 11 section 5, part 12 PKI), and the TD1 MRZ (part 5).

Modules: ``tlv`` (BER-TLV), ``mrz`` (TD1), ``lds`` (EF.COM and data groups), ``sod``
(EF.SOD), ``pki`` (CSCA and Document Signer certificates), ``passive`` (verification),
``chip`` (all files of one card), ``chip_data`` (one card's chip data as the registry
sends it to the station), ``validity`` (the card's expiry rule), ``from_record`` (the
adapter from an enrollment record).
"""
