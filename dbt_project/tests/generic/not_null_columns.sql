-- Fails with the rows where any of `columns` is NULL. One scan of the model for all its required
-- columns: a not_null test per column scanned a staging view of every flight once per column, at
-- every landed day, before any feature view could start building.
{% test not_null_columns(model, columns) %}

select {{ columns | join(', ') }}
from {{ model }}
where {% for column in columns %}{{ column }} is null{% if not loop.last %} or {% endif %}{% endfor %}

{% endtest %}
