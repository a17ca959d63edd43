"""Structured output: the schema argument, and the check of a reply against a JSON schema."""

import pytest
from pydantic import BaseModel

from csctracker_ai_core.exceptions import InvalidInputError
from csctracker_ai_core.gemini.structured import SchemaMismatch, check_schema, response_schema_from

SCHEMA = {
    "type": "object",
    "properties": {
        "nome": {"type": "string"},
        "idade": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 2},
        "endereco": {"$ref": "#/$defs/Endereco"},
        "apelido": {"type": "string", "nullable": True},
        "nota": {"anyOf": [{"type": "number"}, {"type": "null"}]},
    },
    "required": ["nome", "idade"],
    "additionalProperties": False,
    "$defs": {"Endereco": {"type": "object", "properties": {"cep": {"type": "string"}}, "required": ["cep"]}},
}


@pytest.mark.parametrize(
    "value",
    [
        {"nome": "Ana", "idade": 30},
        {
            "nome": "Ana",
            "idade": 30.0,
            "tags": ["a", "b"],
            "endereco": {"cep": "01001-000"},
            "apelido": None,
            "nota": None,
        },
        {"nome": "Ana", "idade": 0, "nota": 9.5},
    ],
)
def test_values_that_fit(value):
    check_schema(value, SCHEMA)


@pytest.mark.parametrize(
    "value, where",
    [
        ({"nome": "Ana"}, "missing required ['idade']"),
        ({"nome": "Ana", "idade": "30"}, "$.idade: expected integer"),
        ({"nome": "Ana", "idade": True}, "$.idade: expected integer"),
        ({"nome": "Ana", "idade": -1}, "minimum"),
        ({"nome": "Ana", "idade": 1, "tags": ["c"]}, "$.tags[0]"),
        ({"nome": "Ana", "idade": 1, "tags": ["a", "a", "a"]}, "maxItems"),
        ({"nome": "Ana", "idade": 1, "endereco": {}}, "$.endereco: missing required ['cep']"),
        ({"nome": "Ana", "idade": 1, "cor": "azul"}, "unexpected property 'cor'"),
        ({"nome": "Ana", "idade": 1, "nota": "dez"}, "anyOf"),
        ([1], "$: expected object"),
    ],
)
def test_values_that_break_it_say_where(value, where):
    with pytest.raises(SchemaMismatch) as info:
        check_schema(value, SCHEMA)
    assert where in str(info.value)


class Pessoa(BaseModel):
    nome: str
    idade: int


def test_pydantic_class_validates_to_an_instance():
    schema = response_schema_from(Pessoa)
    assert schema.validate({"nome": "Ana", "idade": 3}) == Pessoa(nome="Ana", idade=3)
    with pytest.raises(SchemaMismatch, match="idade"):
        schema.validate({"nome": "Ana"})
    assert response_schema_from(Pessoa) == schema  # same JSON text: one cached config


@pytest.mark.parametrize("bad", ["object", 3, Pessoa(nome="a", idade=1), {"type": 3}, {"x": {1, 2}}])
def test_bad_schema_arguments(bad):
    with pytest.raises(InvalidInputError):
        response_schema_from(bad)
