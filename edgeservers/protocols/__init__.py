"""The wire protocols over the model, as peers: Seldon's v1 (v1/) and the Open Inference Protocol (oip/); what
both share: errors as each answers them, JSON and protobuf messages counted before they are parsed."""
