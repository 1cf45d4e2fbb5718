"""The two functions the tool-call tests offer (OpenAI's and Anthropic's
clients alike), and their parameters' schemas for `jsonschema`."""

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 40},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
DESCRIPTIONS = {"get_weather": "The current weather in a city.", "add": "Adds two integers."}
