//! ISO 7816 APDUs, BER-TLV, EMV read, simulator.
